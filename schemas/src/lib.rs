//! Serde types of lf's pipeline manifests and of every step kind's parameters.
//!
//! The principal types are [`Manifest`] (the envelope a pipeline file follows) and the per-kind parameter
//! structs in [`kinds`], each implementing [`Params`], which says which other steps and local files a step
//! reads. The JSON Schema of a whole manifest (`schemas/pipeline.schema.json`) is generated from these types
//! by the engine's registry (`lf schema`), so the schema, the docs and the parser cannot drift apart.
//!
//! Every parameter struct denies unknown keys and documents its defaults; the doc comments become the
//! schema's descriptions, which editors show on hover.

pub mod kinds;
mod manifest;
mod params;

pub use manifest::{Device, Dtype, Manifest};
pub use params::{FieldPath, Input, Params, Seg, Target};
