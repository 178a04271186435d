//! `lf preview`: runs a dataset step if needed and shows its first rows as the model will see them.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use super::exit::{self, Exit, Failure};
use super::manifest::{ManifestArgs, load};
use super::plan::{PlanArgs, make_plan, plan_options};
use super::run::print_summary;
use super::{App, Cli, open_store};
use crate::diag;
use crate::lockfile::Lockfile;
use crate::progress::Progress;
use crate::run::{self, RunOptions};

#[derive(Args)]
pub(super) struct PreviewArgs {
    /// The manifest.
    file: PathBuf,
    /// The dataset step to preview (it is run first if needed).
    step: String,
    /// How many rows.
    #[arg(long, short = 'n', default_value_t = 3)]
    rows: usize,
}

/// `lf preview`.
pub(super) fn preview(app: &App, cli: &Cli, args: &PreviewArgs, color: bool) -> exit::Result {
    let manifest = ManifestArgs {
        file: Some(args.file.clone()),
        vars: Vec::new(),
        device: None,
        dtype: None,
    };
    let loaded = load(app, &manifest, color, false)?;
    let pipeline = &loaded.pipeline;
    let Some(index) = pipeline.index_of(&args.step) else {
        return Err(Failure::usage(format_args!(
            "no step is named `{}`\nhint: steps are {}",
            args.step,
            diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
        )));
    };
    let store = open_store(cli)?;
    let plan_args = PlanArgs {
        manifest,
        force: Vec::new(),
        only: vec![args.step.clone()],
        json: false,
    };
    let lock = Lockfile::read(&loaded.lockfile_path(cli))?;
    let (_, plan) = make_plan(app, cli, pipeline, &store, &plan_args, lock.as_ref())?;
    let record = run::execute(
        pipeline,
        &store,
        &plan,
        &RunOptions {
            plan: plan_options(cli, &plan_args),
            jobs: 2,
            locked: None,
            runs_dir: cli.runs_dir.clone(),
            progress: Progress::new(!cli.quiet && std::io::stderr().is_terminal()),
            previous: Default::default(),
            log_steps: !cli.quiet && !std::io::stderr().is_terminal(),
        },
    )?;
    let step = record.steps.iter().find(|s| s.name == args.step);
    let Some(artifact) = step.and_then(|s| s.artifact) else {
        print_summary(&record);
        return Ok(Exit::Failed);
    };
    app.extensions.preview(
        pipeline.steps[index].kind.kind(),
        &store.object_path(&artifact),
        args.rows,
    )?;
    Ok(Exit::Ok)
}
