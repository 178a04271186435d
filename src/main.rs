//! The `lf` binary: the engine's command line with every step kind registered.

use std::process::ExitCode;

fn main() -> ExitCode {
    lf_engine::cli::main(lf_serve::with_server(lf_steps::app(include_str!(
        "../pipelines/quickstart.yaml"
    ))))
}
