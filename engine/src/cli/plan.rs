//! `lf plan`: what `lf run` would do, and why; planning shared by `lf run` and `lf preview`.

use std::collections::BTreeSet;
use std::io::Write;

use clap::Args;
use lf_cache::Store;
use serde_json::Value as Json;

use super::exit::{self, Exit, Failure};
use super::manifest::{ManifestArgs, load};
use super::{App, Cli, offline, open_store};
use crate::diag;
use crate::lockfile::Lockfile;
use crate::numerics::Numerics;
use crate::pipeline::Pipeline;
use crate::plan::{self, Plan, PlanOptions, Status};
use crate::record::RunRecord;

#[derive(Args)]
pub(super) struct PlanArgs {
    #[command(flatten)]
    pub(super) manifest: ManifestArgs,
    /// Plan this step even if cached (repeatable).
    #[arg(long, value_name = "STEP")]
    pub(super) force: Vec<String>,
    /// Plan only this step and what it needs (repeatable).
    #[arg(long, value_name = "STEP")]
    pub(super) only: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    pub(super) json: bool,
}

/// `lf plan`.
pub(super) fn plan(app: &App, cli: &Cli, args: &PlanArgs, color: bool) -> exit::Result {
    let manifest = load(app, &args.manifest, color, args.json)?;
    let store = open_store(cli)?;
    let lock = Lockfile::read(&manifest.lockfile_path(cli))?;
    let (numerics, plan) = make_plan(app, cli, &manifest.pipeline, &store, args, lock.as_ref())?;
    manifest.check_plan(&plan, color, args.json)?;
    print_plan(&manifest.pipeline, &plan, &numerics, args.json, cli.verbose)?;
    Ok(Exit::Ok)
}

pub(super) fn plan_options(cli: &Cli, args: &PlanArgs) -> PlanOptions {
    PlanOptions {
        force: args.force.iter().cloned().collect::<BTreeSet<_>>(),
        only: args.only.clone(),
        offline: offline(cli),
    }
}

/// Resolves the numerics and plans the pipeline, after checking the step names given to `--force` and
/// `--only`; `lock` is the pipeline's lockfile, if it has one. An unknown step name, or a device or dtype
/// this binary cannot use, is a usage error.
pub(super) fn make_plan(
    app: &App,
    cli: &Cli,
    pipeline: &Pipeline,
    store: &Store,
    args: &PlanArgs,
    lock: Option<&Lockfile>,
) -> exit::Result<(Numerics, Plan)> {
    for name in args.force.iter().chain(&args.only) {
        if pipeline.index_of(name).is_none() {
            return Err(Failure::usage(format_args!(
                "no step is named `{name}`\nhint: steps are {}",
                diag::list(pipeline.steps.iter().map(|s| s.name.as_str()))
            )));
        }
    }
    let numerics = app
        .extensions
        .backends()
        .resolve(pipeline.device, pipeline.dtype)
        .map_err(Failure::usage)?;
    let previous = previous_keys(cli, pipeline, lock);
    let pins = lock.map(Lockfile::pins).unwrap_or_default();
    let plan = plan::plan(
        pipeline,
        store,
        &numerics,
        &plan_options(cli, args),
        &previous,
        &pins,
    )?;
    Ok((numerics, plan))
}

/// The keys of the last run of this pipeline (or the lockfile's), to explain what changed.
pub(super) fn previous_keys(
    cli: &Cli,
    pipeline: &Pipeline,
    lock: Option<&Lockfile>,
) -> plan::Previous {
    let last_run = std::fs::read(cli.runs_dir.join(&pipeline.name).join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<RunRecord>(&b).ok());
    let mut previous = plan::Previous::default();
    if let Some(lock) = lock {
        for (name, step) in &lock.steps {
            previous.keys.insert(name.clone(), step.key);
            if let Some(json) = &step.key_json {
                previous.key_json.insert(step.key, json.clone());
            }
        }
    }
    if let Some(run) = last_run {
        previous.keys.extend(run.keys());
    }
    previous
}

/// Prints the plan on stdout: a table, or JSON.
pub(super) fn print_plan(
    pipeline: &Pipeline,
    plan: &Plan,
    numerics: &Numerics,
    json: bool,
    verbose: u8,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let steps: Vec<Json> = plan
            .order
            .iter()
            .map(|&i| {
                let p = plan.steps[i].as_ref().expect("ordered steps are planned");
                serde_json::json!({
                    "name": pipeline.steps[i].name,
                    "kind": pipeline.steps[i].kind.kind(),
                    "needs": pipeline.needs(i),
                    "status": p.status,
                    "key": p.key.as_ref().map(|k| k.hash.hex()),
                    "key_json": if verbose >= 2 { p.key.as_ref().map(|k| k.json.clone()) } else { None },
                    "artifact": p.record.as_ref().map(|r| r.artifact.hex()),
                    "reasons": p.reasons,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "pipeline": pipeline.name,
            "manifest": pipeline.path,
            "numerics": numerics,
            "steps": steps,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "plan for `{}` ({}) on {}/{}",
        pipeline.name,
        pipeline.path.display(),
        numerics.device,
        numerics.dtype
    )?;
    let width = plan
        .order
        .iter()
        .map(|&i| pipeline.steps[i].name.len())
        .max()
        .unwrap_or(4);
    let (mut to_run, mut cached, mut pending) = (0, 0, 0);
    for &i in &plan.order {
        let step = &pipeline.steps[i];
        let p = plan.steps[i].as_ref().expect("ordered steps are planned");
        let status = match p.status {
            Status::Cached => {
                cached += 1;
                "cached"
            }
            Status::Run => {
                to_run += 1;
                "run"
            }
            Status::Pending => {
                pending += 1;
                "pending"
            }
        };
        let detail = match p.status {
            Status::Cached => p.key.as_ref().map(|k| k.hash.short()).unwrap_or_default(),
            _ => p.reasons.join("; "),
        };
        writeln!(
            out,
            "  {status:<8} {:<width$}  {:<9} {detail}",
            step.name,
            step.kind.kind()
        )?;
        if verbose >= 2
            && let Some(key) = &p.key
        {
            writeln!(
                out,
                "===> cache key {}:\n{}",
                key.hash,
                serde_json::to_string_pretty(&key.json)?
            )?;
        }
    }
    writeln!(out, "{to_run} to run, {pending} pending, {cached} cached")?;
    Ok(())
}
