//! Parameters of every step kind, one module per kind.

pub mod command;
pub mod dataset;
pub mod download;
pub mod evaluate;
pub mod export;
pub mod model;
pub mod template;
pub mod tokenizer;
pub mod train;

pub use command::CommandParams;
pub use dataset::DatasetParams;
pub use download::DownloadParams;
pub use evaluate::EvaluateParams;
pub use export::ExportParams;
pub use model::ModelParams;
pub use template::TemplateParams;
pub use tokenizer::TokenizerParams;
pub use train::{DpoParams, KtoParams, TrainParams};

/// Parameters of `pretrain` (the same as `sft`'s; only the dataset stage and the default
/// `finetuning_type` differ).
pub type PretrainParams = TrainParams;
/// Parameters of `sft`.
pub type SftParams = TrainParams;
/// Parameters of `rm` (the same as `sft`'s; the dataset has `stage: rm`).
pub type RmParams = TrainParams;
