//! Loading a manifest for a command: reading it, applying `--var`, `--device` and `--dtype`, validating
//! it and printing its diagnostics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;
use lf_schemas::{Device, Dtype};
use serde_json::Value as Json;

use super::exit::{self, Exit, Failure};
use super::{App, Cli};
use crate::diag::{self, SourceFile};
use crate::lockfile::lock_path;
use crate::pipeline::{self, Pipeline};
use crate::plan::Plan;

#[derive(Args, Clone)]
pub(super) struct ManifestArgs {
    /// The manifest (default: the embedded quickstart pipeline).
    pub(super) file: Option<PathBuf>,
    /// Override a variable: `--var name=Lumi` (repeatable).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub(super) vars: Vec<String>,
    /// Override the manifest's device.
    #[arg(long, value_enum)]
    pub(super) device: Option<Device>,
    /// Override the manifest's dtype.
    #[arg(long, value_enum)]
    pub(super) dtype: Option<Dtype>,
}

/// A manifest as a command loaded it: the validated pipeline and the text it was read from, read once
/// and kept to locate problems found later.
pub(super) struct Loaded {
    /// The validated pipeline, with `--device` and `--dtype` applied.
    pub(super) pipeline: Pipeline,
    /// The manifest given on the command line; `None` for the embedded quickstart.
    file: Option<PathBuf>,
    /// The manifest's text.
    text: String,
}

/// Reads the manifest given on the command line, or takes the embedded quickstart: the path messages show,
/// and the text.
pub(super) fn read(app: &App, file: Option<&Path>) -> anyhow::Result<(PathBuf, String)> {
    match file {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
            let text = String::from_utf8(bytes).map_err(|e| not_utf8(path, e.as_bytes(), &e))?;
            Ok((path.to_path_buf(), text))
        }
        None => Ok((PathBuf::from("quickstart.yaml"), app.quickstart.to_string())),
    }
}

/// The error for a manifest that is not UTF-8, at the line and column of its first bad byte.
fn not_utf8(path: &Path, bytes: &[u8], e: &std::string::FromUtf8Error) -> anyhow::Error {
    let at = e.utf8_error().valid_up_to();
    let before = String::from_utf8_lossy(&bytes[..at]);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    anyhow::anyhow!(
        "{}:{line}:{col}: the manifest is not UTF-8 (byte 0x{:02x})\nhint: save it as UTF-8",
        path.display(),
        bytes[at]
    )
}

/// Reads and validates the manifest, printing its diagnostics; any problem is a usage error.
pub(super) fn load(
    app: &App,
    args: &ManifestArgs,
    color: bool,
    json: bool,
) -> exit::Result<Loaded> {
    let (path, text) = match read(app, args.file.as_deref()) {
        Ok(read) => read,
        Err(e) => return Err(Failure::usage(format_args!("{e:#}"))),
    };
    let mut overrides = BTreeMap::new();
    for var in &args.vars {
        let Some((name, value)) = var.split_once('=') else {
            return Err(Failure::usage(format_args!(
                "`--var {var}` must be NAME=VALUE"
            )));
        };
        let node = crate::yaml::parse(value).ok();
        let value = node.map_or(Json::String(value.into()), |n| n.to_json());
        overrides.insert(name.to_string(), value);
    }
    let display = path.display().to_string();
    let source = SourceFile {
        path: &display,
        text: &text,
    };
    match pipeline::load(&path, &text, &app.registry, &overrides) {
        Ok(mut p) => {
            if let Some(device) = args.device {
                p.device = device;
            }
            if let Some(dtype) = args.dtype {
                p.dtype = dtype;
            }
            if !p.warnings.is_empty() && !json {
                eprint!("{}", diag::render(&p.warnings, &source, color));
            }
            diag::locate(&mut p.warnings, &source);
            Ok(Loaded {
                pipeline: p,
                file: args.file.clone(),
                text,
            })
        }
        Err(mut diags) => {
            if json {
                diag::locate(&mut diags, &source);
                println!("{}", serde_json::json!({"ok": false, "diagnostics": diags}));
            } else {
                eprint!("{}", diag::render(&diags, &source, color));
                let errors = diags
                    .iter()
                    .filter(|d| d.severity == diag::Severity::Error)
                    .count();
                eprintln!(
                    "error: `{display}` has {errors} problem{}",
                    if errors == 1 { "" } else { "s" }
                );
            }
            Err(Failure::reported(Exit::Usage))
        }
    }
}

impl Loaded {
    /// Where the pipeline's lockfile lives (embedded pipelines keep theirs under the runs folder).
    pub(super) fn lockfile_path(&self, cli: &Cli) -> PathBuf {
        match &self.file {
            Some(file) => lock_path(file),
            None => cli.runs_dir.join(format!("{}.lock", self.pipeline.name)),
        }
    }

    /// Reports the problems the plan found in the inputs of steps that must run (a dataset tokenized for
    /// another model, ...) like validation errors, as usage errors: before anything runs.
    pub(super) fn check_plan(&self, plan: &Plan, color: bool, json: bool) -> exit::Result<()> {
        let mut diags = plan.diagnostics(&self.pipeline);
        if diags.is_empty() {
            return Ok(());
        }
        let display = self.pipeline.path.display().to_string();
        let source = SourceFile {
            path: &display,
            text: &self.text,
        };
        if json {
            diag::locate(&mut diags, &source);
            println!("{}", serde_json::json!({"ok": false, "diagnostics": diags}));
        } else {
            eprint!("{}", diag::render(&diags, &source, color));
            eprintln!(
                "error: the inputs of `{display}`'s steps have {} problem{}; nothing ran",
                diags.len(),
                if diags.len() == 1 { "" } else { "s" }
            );
        }
        Err(Failure::reported(Exit::Usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_that_is_not_utf8_is_refused_at_its_first_bad_byte() {
        let bytes = b"name: demo\nsteps:\n  a\xff: {}\n".to_vec();
        let e = String::from_utf8(bytes.clone()).unwrap_err();
        let msg = format!("{:#}", not_utf8(Path::new("p.yaml"), &bytes, &e));
        assert!(
            msg.starts_with("p.yaml:3:4: the manifest is not UTF-8 (byte 0xff)"),
            "{msg}"
        );
    }
}
