//! `lf run`: runs a pipeline, checks it against the lockfile (`--locked`) or updates the lockfile.

use std::io::{IsTerminal, Write};

use clap::Args;
use serde_json::Value as Json;

use super::exit::{self, Exit};
use super::manifest::load;
use super::plan::{PlanArgs, make_plan, plan_options, previous_keys, print_plan};
use super::{App, Cli, open_store};
use crate::lockfile::Lockfile;
use crate::progress::Progress;
use crate::record::{RunRecord, StepStatus};
use crate::run::{self, RunOptions};

#[derive(Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    plan: PlanArgs,
    /// Print the plan and stop.
    #[arg(long)]
    dry_run: bool,
    /// Fail if anything resolves or produces differently from the lockfile.
    #[arg(long)]
    locked: bool,
    /// How many independent steps may run at once.
    #[arg(long, short = 'j', default_value_t = 2)]
    jobs: usize,
}

/// `lf run`.
pub(super) fn run(app: &App, cli: &Cli, args: &RunArgs, color: bool) -> exit::Result {
    let manifest = load(app, &args.plan.manifest, color, args.plan.json)?;
    let pipeline = &manifest.pipeline;
    let store = open_store(cli)?;
    let lock_file = manifest.lockfile_path(cli);
    let lock = Lockfile::read(&lock_file)?;
    let (numerics, plan) = make_plan(app, cli, pipeline, &store, &args.plan, lock.as_ref())?;
    manifest.check_plan(&plan, color, args.plan.json)?;
    if args.dry_run {
        print_plan(pipeline, &plan, &numerics, args.plan.json, cli.verbose)?;
        return Ok(Exit::Ok);
    }
    let locked = if args.locked {
        let Some(lock) = lock.clone() else {
            eprintln!(
                "error: `--locked` needs a lockfile, and `{}` does not exist\nhint: run once without `--locked` to write it",
                lock_file.display()
            );
            return Ok(Exit::Failed);
        };
        let drift = lock.drift(pipeline, &plan, &store);
        if !drift.is_empty() {
            eprintln!("error: the run differs from `{}`:", lock_file.display());
            for d in &drift {
                eprintln!("  - {d}");
            }
            eprintln!("hint: run without `--locked` to update the lockfile");
            return Ok(Exit::Failed);
        }
        Some(lock)
    } else {
        None
    };
    let progress = Progress::new(!cli.quiet && std::io::stderr().is_terminal());
    let previous = previous_keys(cli, pipeline, lock.as_ref());
    let record = run::execute(
        pipeline,
        &store,
        &plan,
        &RunOptions {
            plan: plan_options(cli, &args.plan),
            jobs: args.jobs,
            locked: locked.clone(),
            runs_dir: cli.runs_dir.clone(),
            progress,
            previous,
            log_steps: !cli.quiet && !std::io::stderr().is_terminal(),
        },
    )?;
    if locked.is_none() {
        let updated =
            run::updated_lockfile(pipeline, &store, &plan, &record, &numerics, lock.as_ref());
        if lock.as_ref() != Some(&updated) {
            updated.write(&lock_file)?;
        }
        // Best effort: if the store cannot record it, `lf cache gc` merely keeps fewer artifacts.
        let _ = store.register_lockfile(&lock_file);
    }
    if args.plan.json {
        println!("{}", serde_json::to_string_pretty(&record)?);
    }
    print_summary(&record);
    Ok(if record.ok { Exit::Ok } else { Exit::Failed })
}

/// Prints the run's table of steps and its one-line outcome on stderr.
pub(super) fn print_summary(record: &RunRecord) {
    let mut err = std::io::stderr().lock();
    let width = record
        .steps
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        err,
        "\n{:<width$}  {:<9} {:<7} {:>8}  {:<12}  artifact",
        "step", "kind", "status", "time", "key"
    );
    for s in &record.steps {
        let status = match s.status {
            StepStatus::Cached => "cached",
            StepStatus::Ran => "ran",
            StepStatus::Failed => "FAILED",
            StepStatus::Skipped => "skipped",
        };
        let time = if s.status == StepStatus::Ran || s.status == StepStatus::Failed {
            format!("{:.1}s", s.wall_s)
        } else {
            "-".into()
        };
        let metrics = s
            .metrics
            .iter()
            .map(|(k, v)| match v {
                Json::Number(n) if n.is_f64() => {
                    let v = n.as_f64().unwrap_or_default();
                    if v.fract() == 0.0 && v.abs() < 1e15 {
                        format!("{k}={v:.0}")
                    } else {
                        format!("{k}={v:.4}")
                    }
                }
                Json::String(s) => format!("{k}={s}"),
                _ => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            err,
            "{:<width$}  {:<9} {:<7} {:>8}  {:<12}  {}{}",
            s.name,
            s.kind,
            status,
            time,
            s.key.map(|k| k.short()).unwrap_or_default(),
            s.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            if metrics.is_empty() {
                String::new()
            } else {
                format!("  {metrics}")
            }
        );
        if let Some(e) = &s.error {
            for line in e.lines() {
                let _ = writeln!(err, "{:width$}  {line}", "");
            }
        }
    }
    let failed = record
        .steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .count();
    let _ = writeln!(
        err,
        "{} in {:.1}s: {} ran, {} cached, {} failed, {} skipped",
        if record.ok { "finished" } else { "FAILED" },
        record.wall_s,
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Ran)
            .count(),
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Cached)
            .count(),
        failed,
        record
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Skipped)
            .count(),
    );
}
