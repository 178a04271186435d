//! Run records: what each `lf run` did, step by step. Kept in the store (`runs/`) and, for the latest run
//! of a pipeline, next to its step links (`runs/<pipeline>/run.json`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lf_cache::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::numerics::Numerics;

/// What happened to a step in a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Its result was in the store.
    Cached,
    /// It ran and succeeded.
    Ran,
    /// It ran and failed.
    Failed,
    /// It did not run because a step it needs failed (or it was not selected).
    Skipped,
}

/// One step of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// Outcome.
    pub status: StepStatus,
    /// Cache key (hex), when known.
    pub key: Option<Hash>,
    /// Artifact hash, when produced.
    pub artifact: Option<Hash>,
    /// The user-facing path of the artifact (`runs/<pipeline>/<step>`).
    pub path: Option<PathBuf>,
    /// Seconds this run spent on the step (0 when cached).
    pub wall_s: f64,
    /// Headline metrics.
    #[serde(default)]
    pub metrics: BTreeMap<String, Json>,
    /// Why it ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One `lf run`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique id (start time and process id).
    pub id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// The manifest path.
    pub manifest: PathBuf,
    /// Start, milliseconds since the Unix epoch.
    pub started_unix_ms: u128,
    /// Wall time of the run.
    pub wall_s: f64,
    /// Numerics used.
    pub numerics: Numerics,
    /// Whether every selected step succeeded.
    pub ok: bool,
    /// Steps in the order they were planned.
    pub steps: Vec<StepRecord>,
}

impl RunRecord {
    /// Artifacts this run references.
    pub fn artifacts(&self) -> impl Iterator<Item = Hash> + '_ {
        self.steps.iter().filter_map(|s| s.artifact)
    }

    /// Keys by step name.
    pub fn keys(&self) -> BTreeMap<String, Hash> {
        self.steps
            .iter()
            .filter_map(|s| s.key.map(|k| (s.name.clone(), k)))
            .collect()
    }
}

/// Reads all run records in a folder, oldest first.
pub fn read_all(dir: &Path) -> Vec<RunRecord> {
    let mut records: Vec<RunRecord> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| std::fs::read(e.path()).ok())
        .filter_map(|bytes| serde_json::from_slice(&bytes).ok())
        .collect();
    records.sort_by_key(|r: &RunRecord| (r.started_unix_ms, r.id.clone()));
    records
}

/// Where a step of a run in progress stands (`runs/<pipeline>/live.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveStatus {
    /// Not started: it waits for its inputs or for a free job slot.
    Waiting,
    /// Running now; its artifact is being written in `out_dir`.
    Running,
    /// Its result was in the store.
    Cached,
    /// It ran and succeeded.
    Ran,
    /// It ran and failed.
    Failed,
    /// It did not run because a step it needs failed.
    Skipped,
}

impl From<StepStatus> for LiveStatus {
    fn from(s: StepStatus) -> Self {
        match s {
            StepStatus::Cached => LiveStatus::Cached,
            StepStatus::Ran => LiveStatus::Ran,
            StepStatus::Failed => LiveStatus::Failed,
            StepStatus::Skipped => LiveStatus::Skipped,
        }
    }
}

/// One step of a run in progress.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveStep {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: String,
    /// The steps of this run whose artifacts it reads.
    pub needs: Vec<String>,
    /// Where it stands.
    pub status: LiveStatus,
    /// Why it runs (the plan's reasons until it ends, then the run's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// The staging folder its artifact is written in while it runs (training writes
    /// `logs/metrics.jsonl` there as it goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_dir: Option<PathBuf>,
    /// Artifact hash, once produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Hash>,
    /// Seconds it took (0 until it ends, and when cached).
    pub wall_s: f64,
    /// The error, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A run as it happens, rewritten (atomically) at every change of a step's status: what `lf ui` shows
/// live. `finished` is set by its last write; a file left unfinished by a process that is gone is an
/// interrupted run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LiveRun {
    /// The run's id (as in its [`RunRecord`]).
    pub id: String,
    /// The `lf` process running it.
    pub pid: u32,
    /// Pipeline name.
    pub pipeline: String,
    /// The manifest path.
    pub manifest: PathBuf,
    /// Start, milliseconds since the Unix epoch.
    pub started_unix_ms: u128,
    /// Whether the run has ended.
    pub finished: bool,
    /// Whether every step succeeded (once finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// The planned steps, in plan order.
    pub steps: Vec<LiveStep>,
}

/// The name of the live file in `runs/<pipeline>/`.
pub const LIVE_FILE: &str = "live.json";
