//! `lf validate`: checks a manifest and reports every problem.

use std::path::PathBuf;

use clap::Args;
use serde_json::Value as Json;

use super::App;
use super::exit::{self, Exit};
use super::manifest::{ManifestArgs, load};
use crate::pipeline::Pipeline;

#[derive(Args)]
pub(super) struct ValidateArgs {
    /// The manifest (default: the embedded quickstart pipeline).
    file: Option<PathBuf>,
    /// Print diagnostics as JSON.
    #[arg(long)]
    json: bool,
}

/// `lf validate`.
pub(super) fn validate(app: &App, args: &ValidateArgs, color: bool) -> exit::Result {
    let manifest = ManifestArgs {
        file: args.file.clone(),
        vars: Vec::new(),
        device: None,
        dtype: None,
    };
    let p = load(app, &manifest, color, args.json)?.pipeline;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"ok": true, "diagnostics": warnings_json(&p)})
        );
    } else {
        eprintln!("{}: ok ({} steps)", p.path.display(), p.steps.len());
    }
    Ok(Exit::Ok)
}

fn warnings_json(p: &Pipeline) -> Json {
    serde_json::to_value(&p.warnings).unwrap_or(Json::Null)
}
