//! `lf cache ls|verify|gc`: inspects and cleans the artifact store.

use std::collections::{BTreeMap, HashSet};

use clap::Subcommand;
use lf_cache::Hash;
use serde_json::Value as Json;

use super::exit::{self, Exit};
use super::{Cli, open_store};
use crate::lockfile::Lockfile;
use crate::record;

#[derive(Subcommand)]
pub(super) enum CacheCommand {
    /// List cached step results.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-hash every artifact and report corrupted ones.
    Verify {
        /// Remove corrupted artifacts (their steps run again next time).
        #[arg(long)]
        repair: bool,
    },
    /// Remove artifacts no lockfile and none of the last runs reference.
    Gc {
        /// Keep the artifacts of this many most recent runs.
        #[arg(long, default_value_t = 10)]
        keep_runs: usize,
        /// Also remove checkpoints of interrupted steps.
        #[arg(long)]
        scratch: bool,
        /// Show what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

/// `lf cache`.
pub(super) fn cache(cli: &Cli, cmd: &CacheCommand) -> exit::Result {
    let store = open_store(cli)?;
    match cmd {
        CacheCommand::Ls { json } => {
            let records = store.records()?;
            let sizes: BTreeMap<Hash, (u64, u64)> = store
                .objects()?
                .into_iter()
                .map(|o| (o.hash, (o.bytes, o.files)))
                .collect();
            if *json {
                let rows: Vec<Json> = records
                    .iter()
                    .map(|r| {
                        serde_json::json!({
                            "key": r.key, "artifact": r.artifact, "kind": r.kind, "step": r.step,
                            "created_unix_s": r.created_unix_s, "wall_s": r.wall_s,
                            "bytes": sizes.get(&r.artifact).map(|s| s.0),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<12}  {:<12}  {:<9} {:<16} {:>10}",
                    "key", "artifact", "kind", "step", "size"
                );
                for r in &records {
                    println!(
                        "{:<12}  {:<12}  {:<9} {:<16} {:>10}",
                        r.key.short(),
                        r.artifact.short(),
                        r.kind,
                        r.step,
                        sizes
                            .get(&r.artifact)
                            .map_or("missing".into(), |s| human_bytes(s.0))
                    );
                }
                let total: u64 = sizes.values().map(|s| s.0).sum();
                println!(
                    "{} keys, {} artifacts, {}",
                    records.len(),
                    sizes.len(),
                    human_bytes(total)
                );
            }
            Ok(Exit::Ok)
        }
        CacheCommand::Verify { repair } => {
            let report = store.verify(*repair)?;
            for (name, found, changed) in &report.corrupted {
                println!(
                    "corrupted: artifact {name} now hashes to {found}{}",
                    lf_cache::describe_damage(changed)
                );
            }
            for key in &report.dangling_keys {
                println!("dangling: key {} points at a missing artifact", key);
            }
            eprintln!(
                "checked {} artifacts: {} corrupted, {} dangling keys{}",
                report.checked,
                report.corrupted.len(),
                report.dangling_keys.len(),
                if *repair { " (removed)" } else { "" }
            );
            if !report.corrupted.is_empty() && !*repair {
                eprintln!(
                    "hint: `lf cache verify --repair` removes them; the steps run again next time"
                );
            }
            Ok(if report.corrupted.is_empty() || *repair {
                Exit::Ok
            } else {
                Exit::Failed
            })
        }
        CacheCommand::Gc {
            keep_runs,
            scratch,
            dry_run,
        } => {
            let mut keep: HashSet<Hash> = HashSet::new();
            for path in &store.lockfiles() {
                if let Ok(Some(lock)) = Lockfile::read(path) {
                    keep.extend(lock.steps.values().map(|s| s.output));
                }
            }
            let runs = record::read_all(&store.runs_dir());
            for run in runs.iter().rev().take(*keep_runs) {
                keep.extend(run.artifacts());
            }
            let report = store.gc(&keep, *scratch, *dry_run)?;
            for o in &report.removed_objects {
                println!(
                    "{} {} ({})",
                    if *dry_run { "would remove" } else { "removed" },
                    o.hash.short(),
                    human_bytes(o.bytes)
                );
            }
            eprintln!(
                "{}{} artifacts, {} keys, {} staging folders, {} scratch folders: {} freed; kept {} artifacts",
                if *dry_run {
                    "dry run: would remove "
                } else {
                    "removed "
                },
                report.removed_objects.len(),
                report.removed_keys,
                report.removed_staging,
                report.removed_scratch,
                human_bytes(report.freed_bytes),
                report.kept_objects
            );
            Ok(Exit::Ok)
        }
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
