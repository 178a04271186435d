//! `lf chat`: chats with a model given as a path or as a step of a pipeline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use lf_cache::Health;
use lf_schemas::{Device, Dtype};

use super::exit::{self, Exit, Failure};
use super::{App, Cli, manifest};
use crate::diag::{self, SourceFile};
use crate::pipeline;

/// Arguments of `lf chat`.
#[derive(Args, Clone, Debug)]
pub struct ChatArgs {
    /// A model folder or GGUF file, or the name of a step of `--file`'s pipeline.
    #[arg(long)]
    pub model: String,
    /// The pipeline whose step `--model` names (default: the embedded quickstart).
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    /// Answer this prompt and exit.
    #[arg(long)]
    pub prompt: Option<String>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Penalty for repeating tokens (1: none).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Most new tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Device.
    #[arg(long, value_enum, default_value_t = Device::Auto)]
    pub device: Device,
}

/// `lf chat`.
pub(super) fn chat(app: &App, cli: &Cli, args: &ChatArgs) -> exit::Result {
    let model = resolve_model(app, cli, &args.model, args.file.as_deref())?;
    let numerics = app
        .extensions
        .backends()
        .resolve(args.device, Dtype::Auto)
        .map_err(Failure::usage)?;
    app.extensions.chat(&model, args, &numerics)?;
    Ok(Exit::Ok)
}

/// The model `--model` names: a path, or the artifact of a step of `--file`'s pipeline. A manifest that
/// cannot be read or is invalid, or a name that is neither, is a usage error; a step that has not run yet
/// is a failure.
pub(super) fn resolve_model(
    app: &App,
    cli: &Cli,
    model: &str,
    file: Option<&Path>,
) -> exit::Result<PathBuf> {
    let direct = PathBuf::from(model);
    if direct.exists() {
        return Ok(direct);
    }
    let (path, text) =
        manifest::read(app, file).map_err(|e| Failure::usage(format_args!("{e:#}")))?;
    let pipeline =
        pipeline::load(&path, &text, &app.registry, &BTreeMap::new()).map_err(|diags| {
            let display = path.display().to_string();
            let source = SourceFile {
                path: &display,
                text: &text,
            };
            eprint!("{}", diag::render(&diags, &source, false));
            Failure::usage(format_args!(
                "`{display}` is not a valid manifest, so `--model` cannot name its steps"
            ))
        })?;
    if pipeline.index_of(model).is_none() {
        return Err(Failure::usage(format_args!(
            "`{}` is neither a file nor a step of `{}`\nhint: steps are {}",
            model,
            pipeline.name,
            diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
        )));
    }
    let link = cli.runs_dir.join(&pipeline.name).join(model);
    if !link.exists() {
        return Err(anyhow::anyhow!(
            "step `{}` of `{}` has not produced an artifact yet\nhint: run `lf run {}` first",
            model,
            pipeline.name,
            file.map_or(String::new(), |f| f.display().to_string())
        )
        .into());
    }
    // Chat does not rebuild what it reads: a damaged artifact stops it, naming what changed.
    let store = super::open_store(cli)?;
    if let Some(artifact) = store.artifact_at(&link)
        && let Health::Damaged { files, .. } = store.check(&artifact)?
    {
        return Err(anyhow::anyhow!(
            "the artifact of step `{}` ({}) is damaged{}\n\
             hint: `lf run {}` builds it again; `lf cache verify --repair` removes every damaged artifact",
            model,
            link.display(),
            lf_cache::describe_damage(&files),
            file.map_or(String::new(), |f| f.display().to_string())
        )
        .into());
    }
    Ok(link)
}
