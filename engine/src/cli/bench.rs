//! `lf bench`: speed measurements of the engine and, through [`Extensions`](super::Extensions), of the ML
//! parts.

use std::path::PathBuf;

use clap::Args;
use lf_schemas::Device;

use super::App;
use super::exit::{self, Exit, Failure};
use crate::diag;

/// Arguments of `lf bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Which benchmark: `engine`, `hash`, or one of the ML benchmarks.
    pub name: String,
    /// Size parameter (MiB for `hash`, steps for `engine`, rows or tokens for others).
    #[arg(long)]
    pub size: Option<u64>,
    /// A model path for model benchmarks.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Device for model benchmarks.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
    /// How `train --model` stores the frozen projections: `nf4`, `fp4` or `int8` (quantised, as
    /// `quantization_bit` does), `none` (dequantised to the compute dtype). Default: as training
    /// does without `quantization_bit` (a GGUF file's quantised blocks kept, other models dense).
    #[arg(long)]
    pub quantization: Option<String>,
}

/// `lf bench`.
pub(super) fn bench(app: &App, args: &BenchArgs) -> exit::Result {
    let result = match args.name.as_str() {
        "engine" => crate::bench::engine(args.size.unwrap_or(10) as usize)?,
        "hash" => crate::bench::hash(args.size.unwrap_or(1024))?,
        name => match app.extensions.bench(name, args) {
            Some(r) => r?,
            None => {
                let mut names = vec!["engine", "hash"];
                names.extend(app.extensions.bench_names());
                return Err(Failure::usage(format_args!(
                    "unknown benchmark `{name}`\nhint: benchmarks are {}",
                    diag::list(names)
                )));
            }
        },
    };
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(Exit::Ok)
}
