//! Parameters of every step kind, one module per kind.

pub mod command;
pub mod download;

pub use command::CommandParams;
pub use download::DownloadParams;
