//! Executes a plan: runs steps in dependency order (independent ones concurrently, within a bound),
//! commits their artifacts, links them under `runs/<pipeline>/<step>`, and writes the run record and the
//! lockfile.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use lf_cache::{Hash, NewRecord, Store};
use serde_json::Value as Json;
use tracing::{info, info_span, warn};

use crate::lockfile::{LockedStep, Lockfile, UNEXPLAINED};
use crate::numerics::Numerics;
use crate::pipeline::{InputSource, Pipeline};
use crate::plan::{self, DAMAGED, Plan, PlanOptions, Status, cache_key, explain, input_hashes};
use crate::progress::Progress;
use crate::record::{LIVE_FILE, LiveRun, LiveStatus, LiveStep, RunRecord, StepRecord, StepStatus};
use crate::step::StepContext;

/// Options of `lf run`.
pub struct RunOptions {
    /// What to plan.
    pub plan: PlanOptions,
    /// How many steps may run at once.
    pub jobs: usize,
    /// The lockfile to hold the run to (`--locked`).
    pub locked: Option<Lockfile>,
    /// Where `runs/<pipeline>/<step>` links go.
    pub runs_dir: PathBuf,
    /// Progress display.
    pub progress: Progress,
    /// The previous key of each step, to explain why a step that was pending at plan time ran.
    pub previous: crate::plan::Previous,
    /// Print a line per step to stderr (when progress bars are not shown and output is not quiet).
    pub log_steps: bool,
}

/// How one step ended.
enum Done {
    Ok {
        status: StepStatus,
        key: Hash,
        artifact: Hash,
        wall_s: f64,
        metrics: BTreeMap<String, Json>,
        reasons: Vec<String>,
    },
    Failed {
        key: Option<Hash>,
        error: String,
        wall_s: f64,
    },
}

/// What a step's thread reports to the executor.
enum Msg {
    /// It started running; its artifact is being written in this staging folder.
    Staged(PathBuf),
    /// It ended.
    Done(Done),
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Waiting,
    Running,
    Finished,
}

/// Runs the plan. Returns the run record; the caller decides the exit code from `record.ok`.
pub fn execute(
    pipeline: &Pipeline,
    store: &Store,
    plan: &Plan,
    options: &RunOptions,
) -> anyhow::Result<RunRecord> {
    let started = Instant::now();
    // Staging folders that killed runs left behind go first; a running process's are locked and kept.
    match store.sweep_staging() {
        Ok((0, _)) => {}
        Ok((n, bytes)) => {
            tracing::info!("removed {n} staging folders of dead runs ({bytes} bytes)")
        }
        Err(e) => tracing::warn!("cannot remove staging folders of dead runs: {e}"),
    }
    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = pipeline.steps.len();
    let mut state = vec![State::Waiting; n];
    let mut records: BTreeMap<usize, StepRecord> = BTreeMap::new();
    let mut outputs: BTreeMap<usize, Hash> = BTreeMap::new();
    let selected = |i: usize| plan.steps[i].is_some();
    let jobs = options.jobs.max(1);
    let id = format!("{started_unix_ms}-{}", std::process::id());
    let mut live = Live::new(pipeline, plan, &options.runs_dir, &id, started_unix_ms);

    let scoped = std::thread::scope(|scope| -> anyhow::Result<()> {
        let (tx, rx) = mpsc::channel::<(usize, Msg)>();
        let mut running = 0usize;
        loop {
            // Start every ready step, within the bound.
            for &i in &plan.order {
                if running >= jobs {
                    break;
                }
                if state[i] != State::Waiting {
                    continue;
                }
                let ups: Vec<usize> = pipeline.upstream(i).filter(|&j| selected(j)).collect();
                if ups
                    .iter()
                    .any(|&j| state[j] == State::Finished && !outputs.contains_key(&j))
                {
                    // Something it needs failed or was skipped.
                    state[i] = State::Finished;
                    let blocker = ups
                        .iter()
                        .find(|&&j| !outputs.contains_key(&j))
                        .map(|&j| pipeline.steps[j].name.clone())
                        .unwrap_or_default();
                    let record = skipped(pipeline, i, &format!("`{blocker}` did not succeed"));
                    live.finished(i, &record);
                    records.insert(i, record);
                    continue;
                }
                if !ups.iter().all(|j| outputs.contains_key(j)) {
                    continue;
                }
                let inputs = input_hashes(pipeline, store, i, &outputs)?
                    .expect("every upstream output is known");
                let input_paths = plan::input_paths(pipeline, store, i, &outputs);
                state[i] = State::Running;
                running += 1;
                let tx = tx.clone();
                scope.spawn(move || {
                    let staged = |dir: PathBuf| {
                        let _ = tx.send((i, Msg::Staged(dir)));
                    };
                    let done = run_step(
                        pipeline,
                        store,
                        plan,
                        options,
                        i,
                        &inputs,
                        &input_paths,
                        &staged,
                    );
                    let _ = tx.send((i, Msg::Done(done)));
                });
            }
            if running == 0 {
                break;
            }
            let (i, done) = match rx.recv().expect("a worker reports before exiting") {
                (i, Msg::Staged(dir)) => {
                    live.running(i, dir);
                    continue;
                }
                (i, Msg::Done(done)) => (i, done),
            };
            running -= 1;
            state[i] = State::Finished;
            let step = &pipeline.steps[i];
            let record = match done {
                Done::Ok {
                    status,
                    key,
                    artifact,
                    wall_s,
                    metrics,
                    reasons,
                } => {
                    if options.log_steps {
                        match status {
                            StepStatus::Ran => {
                                eprintln!("  finished {} in {wall_s:.1}s", step.name)
                            }
                            _ => eprintln!("    cached {}", step.name),
                        }
                    }
                    outputs.insert(i, artifact);
                    let path = link_artifact(
                        &options.runs_dir,
                        &pipeline.name,
                        &step.name,
                        &store.object_path(&artifact),
                    );
                    StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.kind().into(),
                        status,
                        key: Some(key),
                        artifact: Some(artifact),
                        path,
                        wall_s,
                        metrics,
                        reasons,
                        error: None,
                    }
                }
                Done::Failed { key, error, wall_s } => {
                    let reasons = plan.steps[i]
                        .as_ref()
                        .map(|p| p.reasons.clone())
                        .unwrap_or_default();
                    options
                        .progress
                        .println(&format!("error: step `{}` failed: {error}", step.name));
                    StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.kind().into(),
                        status: StepStatus::Failed,
                        key,
                        artifact: None,
                        path: None,
                        wall_s,
                        metrics: BTreeMap::new(),
                        reasons,
                        error: Some(error),
                    }
                }
            };
            live.finished(i, &record);
            records.insert(i, record);
        }
        Ok(())
    });
    if let Err(e) = scoped {
        live.abort();
        return Err(e);
    }

    let steps: Vec<StepRecord> = plan
        .order
        .iter()
        .map(|i| {
            records
                .remove(i)
                .unwrap_or_else(|| skipped(pipeline, *i, "not reached"))
        })
        .collect();
    let ok = steps
        .iter()
        .all(|s| matches!(s.status, StepStatus::Cached | StepStatus::Ran));
    let record = RunRecord {
        id,
        pipeline: pipeline.name.clone(),
        manifest: pipeline.path.clone(),
        started_unix_ms,
        wall_s: started.elapsed().as_secs_f64(),
        numerics: plan.numerics.clone(),
        ok,
        steps,
    };
    let bytes = serde_json::to_vec_pretty(&record)?;
    let written = lf_cache::write_atomic(
        &store.runs_dir().join(format!("{}.json", record.id)),
        &bytes,
    )
    .and_then(|()| {
        lf_cache::write_atomic(
            &options.runs_dir.join(&pipeline.name).join("run.json"),
            &bytes,
        )
    });
    // The live record ends last: whoever sees it finished finds the run records written.
    live.end(&record.steps, ok);
    written?;
    Ok(record)
}

fn skipped(pipeline: &Pipeline, i: usize, why: &str) -> StepRecord {
    StepRecord {
        name: pipeline.steps[i].name.clone(),
        kind: pipeline.steps[i].kind.kind().into(),
        status: StepStatus::Skipped,
        key: None,
        artifact: None,
        path: None,
        wall_s: 0.0,
        metrics: BTreeMap::new(),
        reasons: vec![why.to_string()],
        error: None,
    }
}

/// The run as it happens, written to `runs/<pipeline>/live.json` at every change (best effort: a run
/// that cannot write it still runs).
struct Live {
    run: LiveRun,
    /// Position in `run.steps` of each pipeline step that is planned.
    position: BTreeMap<usize, usize>,
    path: PathBuf,
    warned: bool,
}

impl Live {
    fn new(pipeline: &Pipeline, plan: &Plan, runs_dir: &Path, id: &str, started: u128) -> Live {
        let mut position = BTreeMap::new();
        let steps = plan
            .order
            .iter()
            .enumerate()
            .map(|(pos, &i)| {
                position.insert(i, pos);
                let step = &pipeline.steps[i];
                LiveStep {
                    name: step.name.clone(),
                    kind: step.kind.kind().into(),
                    needs: pipeline.needs(i).into_iter().map(String::from).collect(),
                    status: LiveStatus::Waiting,
                    reasons: plan.steps[i]
                        .as_ref()
                        .map(|p| p.reasons.clone())
                        .unwrap_or_default(),
                    out_dir: None,
                    artifact: None,
                    wall_s: 0.0,
                    error: None,
                }
            })
            .collect();
        let mut live = Live {
            run: LiveRun {
                id: id.to_string(),
                pid: std::process::id(),
                pipeline: pipeline.name.clone(),
                manifest: pipeline.path.clone(),
                started_unix_ms: started,
                finished: false,
                ok: None,
                steps,
            },
            position,
            path: runs_dir.join(&pipeline.name).join(LIVE_FILE),
            warned: false,
        };
        live.write();
        live
    }

    fn step(&mut self, i: usize) -> Option<&mut LiveStep> {
        let pos = *self.position.get(&i)?;
        self.run.steps.get_mut(pos)
    }

    fn running(&mut self, i: usize, out_dir: PathBuf) {
        if let Some(s) = self.step(i) {
            s.status = LiveStatus::Running;
            s.out_dir = Some(out_dir);
        }
        self.write();
    }

    fn finished(&mut self, i: usize, record: &StepRecord) {
        if let Some(s) = self.step(i) {
            s.status = record.status.into();
            s.out_dir = None;
            s.artifact = record.artifact;
            s.wall_s = record.wall_s;
            s.error = record.error.clone();
            if !record.reasons.is_empty() {
                s.reasons = record.reasons.clone();
            }
        }
        self.write();
    }

    fn end(&mut self, steps: &[StepRecord], ok: bool) {
        for (s, r) in self.run.steps.iter_mut().zip(steps) {
            if s.status == LiveStatus::Waiting {
                s.status = r.status.into();
                s.reasons = r.reasons.clone();
            }
        }
        self.run.finished = true;
        self.run.ok = Some(ok);
        self.write();
    }

    /// The run stopped on an error of its own (not a step's): finished, not ok.
    fn abort(&mut self) {
        self.run.finished = true;
        self.run.ok = Some(false);
        self.write();
    }

    fn write(&mut self) {
        let result = std::fs::create_dir_all(self.path.parent().unwrap_or(Path::new(".")))
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(serde_json::to_vec_pretty(&self.run)?))
            .and_then(|bytes| Ok(lf_cache::write_atomic(&self.path, &bytes)?));
        if let Err(e) = result
            && !self.warned
        {
            self.warned = true;
            warn!("cannot write `{}`: {e:#}", self.path.display());
        }
    }
}

/// Runs (or finds in the store) one step whose inputs are all available; `staged` hears of the
/// staging folder when the step starts running.
#[allow(clippy::too_many_arguments)]
fn run_step(
    pipeline: &Pipeline,
    store: &Store,
    plan: &Plan,
    options: &RunOptions,
    i: usize,
    inputs: &BTreeMap<String, Hash>,
    input_paths: &BTreeMap<String, PathBuf>,
    staged: &dyn Fn(PathBuf),
) -> Done {
    let step = &pipeline.steps[i];
    let _span = info_span!("step", step = %step.name, kind = step.kind.kind()).entered();
    let started = Instant::now();
    let planned = plan.steps[i].as_ref().expect("only planned steps run");
    let key = cache_key(step, planned.pin.as_ref(), inputs, &plan.numerics);
    // A step re-running because its cached artifact was damaged, that cannot run now (its source is
    // gone, the hub is unreachable...), says so: the damaged copy is all that is left.
    let rebuilding = planned.reasons.iter().any(|r| r == DAMAGED);
    let fail = |key: Option<Hash>, error: String| {
        let mut error = user_paths(error, pipeline, i, input_paths, &options.runs_dir);
        if rebuilding {
            error.push_str(
                "\nhint: this step ran because its cached artifact was damaged, and it could not be \
                 rebuilt; `lf cache verify` lists damaged artifacts and `lf cache verify --repair` \
                 removes them",
            );
        }
        Done::Failed {
            key,
            error,
            wall_s: started.elapsed().as_secs_f64(),
        }
    };
    if let Some(lock) = &options.locked
        && let Err(diff) = check_locked_key(lock, pipeline, store, i, &key.json, &key.hash)
    {
        return fail(Some(key.hash), diff);
    }
    let forced = options.plan.force.contains(&step.name);
    let finish = |status, record: lf_cache::KeyRecord, wall_s| {
        if let Some(lock) = &options.locked
            && let Some(locked) = lock.steps.get(&step.name)
            && locked.output != record.artifact
        {
            return fail(
                Some(key.hash),
                format!(
                    "output differs from the lockfile: locked {}, produced {}\nhint: the step is not reproducible; compare `lf cache` objects {} and {}",
                    locked.output.short(),
                    record.artifact.short(),
                    locked.output.short(),
                    record.artifact.short()
                ),
            );
        }
        let reasons = if status == StepStatus::Ran {
            why_it_ran(pipeline, store, plan, options, i, &key)
        } else {
            Vec::new()
        };
        Done::Ok {
            status,
            key: key.hash,
            artifact: record.artifact,
            wall_s,
            metrics: record.metrics,
            reasons,
        }
    };
    let lookup = |store: &Store| store.lookup(&key.hash).map_err(|e| format!("{e:#}"));
    if !forced {
        match lookup(store) {
            Ok(Some(record)) => return finish(StepStatus::Cached, record, 0.0),
            Ok(None) => {}
            Err(e) => return fail(Some(key.hash), e),
        }
    }
    let _lock = match store.lock(&key.hash, || {
        options.progress.println(&format!(
            "step `{}`: another lf process is running it; waiting",
            step.name
        ))
    }) {
        Ok(lock) => lock,
        Err(e) => return fail(Some(key.hash), format!("{e:#}")),
    };
    if !forced {
        // Another process may have finished it while we waited.
        match lookup(store) {
            Ok(Some(record)) => return finish(StepStatus::Cached, record, 0.0),
            Ok(None) => {}
            Err(e) => return fail(Some(key.hash), e),
        }
    }
    // Planning already checked the inputs of a step it knew would run with these very inputs.
    let checked_when_planned =
        planned.status == Status::Run && planned.key.as_ref().is_some_and(|k| k.hash == key.hash);
    let problems = if checked_when_planned {
        Vec::new()
    } else {
        step.kind.check_inputs(&step.params, input_paths)
    };
    if !problems.is_empty() {
        let text = problems
            .iter()
            .map(|p| {
                let mut s = format!("`{}`: {}", p.field, p.message);
                if let Some(h) = &p.hint {
                    s.push_str(&format!("\nhint: {h}"));
                }
                s
            })
            .collect::<Vec<_>>()
            .join("\n");
        return fail(Some(key.hash), text);
    }
    let staging = match store.stage(&key.hash) {
        Ok(s) => s,
        Err(e) => return fail(Some(key.hash), format!("{e:#}")),
    };
    let scratch = match store.scratch_dir(&key.hash) {
        Ok(s) => s,
        Err(e) => return fail(Some(key.hash), format!("{e:#}")),
    };
    staged(staging.path().to_path_buf());
    if options.log_steps {
        eprintln!("   running {} ({})", step.name, step.kind.kind());
    }
    let progress = options.progress.for_step(&step.name);
    let spinner = progress.spinner(&format!("running ({})", step.kind.kind()));
    info!(key = %key.hash.short(), "running");
    let metrics = Arc::new(Mutex::new(BTreeMap::new()));
    let result = {
        let mut cx = StepContext {
            step: &step.name,
            out_dir: staging.path(),
            scratch_dir: &scratch,
            manifest_dir: &pipeline.dir,
            inputs: input_paths,
            pin: planned.pin.as_ref(),
            numerics: &plan.numerics,
            offline: options.plan.offline,
            metrics: metrics.clone(),
            progress: &progress,
        };
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            step.kind.run(&step.params, &mut cx)
        }))
    };
    spinner.finish_and_clear();
    let wall_s = started.elapsed().as_secs_f64();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return fail(Some(key.hash), format!("{e:#}")),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            return fail(
                Some(key.hash),
                format!("the step panicked: {what} (this is a bug in lf)"),
            );
        }
    }
    let metrics = std::mem::take(&mut *metrics.lock().unwrap());
    let record = store.commit(
        staging,
        &key.hash,
        NewRecord {
            kind: step.kind.kind(),
            step: &step.name,
            wall_s,
            metrics,
            key_json: key.json.clone(),
        },
    );
    match record {
        Ok(record) => finish(StepStatus::Ran, record, wall_s),
        Err(e) => fail(Some(key.hash), format!("{e:#}")),
    }
}

/// The reasons a step ran: the plan's, or, for a step that was pending at plan time, what changed since
/// its previous key.
fn why_it_ran(
    pipeline: &Pipeline,
    store: &Store,
    plan: &Plan,
    options: &RunOptions,
    i: usize,
    key: &crate::plan::Key,
) -> Vec<String> {
    let step = &pipeline.steps[i];
    if options.plan.force.contains(&step.name) {
        return vec!["forced".into()];
    }
    let planned = plan.steps[i].as_ref().expect("planned");
    if planned.status == crate::plan::Status::Run {
        return planned.reasons.clone();
    }
    match options.previous.json(store, &step.name) {
        Some(prev) => explain(&prev, &key.json, pipeline, i),
        None => vec!["new".into()],
    }
}

fn check_locked_key(
    lock: &Lockfile,
    pipeline: &Pipeline,
    store: &Store,
    i: usize,
    json: &Json,
    key: &Hash,
) -> Result<(), String> {
    let step = &pipeline.steps[i];
    let Some(locked) = lock.steps.get(&step.name) else {
        return Err(format!(
            "step `{}` is not in the lockfile\nhint: run without `--locked` to update it",
            step.name
        ));
    };
    if &locked.key == key {
        return Ok(());
    }
    let why = locked.explain(store, json, pipeline, i).unwrap_or_else(|| {
        if locked.pin.as_ref() != json.get("pin") {
            format!(
                "remote input resolves to {} but the lockfile has {}",
                json.get("pin").map_or("nothing".into(), |p| p.to_string()),
                locked
                    .pin
                    .as_ref()
                    .map_or("nothing".into(), |p| p.to_string())
            )
        } else {
            UNEXPLAINED.into()
        }
    });
    Err(format!(
        "cache key differs from the lockfile (locked {}, now {}): {why}\nhint: run without `--locked` to update the lockfile",
        locked.key.short(),
        key.short()
    ))
}

/// A step's error with the store paths of its inputs replaced by the `runs/` links of the steps that made
/// them (linked as each step finishes), which the user knows and can open.
fn user_paths(
    mut error: String,
    pipeline: &Pipeline,
    i: usize,
    input_paths: &BTreeMap<String, PathBuf>,
    runs_dir: &Path,
) -> String {
    for input in &pipeline.steps[i].inputs {
        if let (InputSource::Step(j), Some(path)) = (&input.source, input_paths.get(&input.field)) {
            let link = runs_dir.join(&pipeline.name).join(&pipeline.steps[*j].name);
            error = error.replace(&path.display().to_string(), &link.display().to_string());
        }
    }
    error
}

/// Points `runs/<pipeline>/<step>` at an artifact (replacing any older link atomically).
fn link_artifact(runs_dir: &Path, pipeline: &str, step: &str, object: &Path) -> Option<PathBuf> {
    let dir = runs_dir.join(pipeline);
    let link = dir.join(step);
    let result = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!(".{step}.{}.link", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(object, &tmp)?;
        #[cfg(not(unix))]
        std::fs::write(&tmp, object.display().to_string())?;
        if link.is_dir() && !link.is_symlink() {
            std::fs::remove_dir_all(&link)?;
        }
        std::fs::rename(&tmp, &link)
    })();
    match result {
        Ok(()) => Some(link),
        Err(e) => {
            warn!("cannot link `{}`: {e}", link.display());
            None
        }
    }
}

/// Builds the lockfile after a run: this run's steps, plus the previous entries of steps it did not
/// reach (so `--only` does not forget the rest).
pub fn updated_lockfile(
    pipeline: &Pipeline,
    store: &Store,
    plan: &Plan,
    record: &RunRecord,
    numerics: &Numerics,
    previous: Option<&Lockfile>,
) -> Lockfile {
    let mut steps = BTreeMap::new();
    for step in &pipeline.steps {
        let ran = record
            .steps
            .iter()
            .find(|s| s.name == step.name && s.key.is_some() && s.artifact.is_some());
        if let Some(s) = ran {
            let index = pipeline.index_of(&step.name).expect("step exists");
            let pin = plan.steps[index].as_ref().and_then(|p| p.pin.clone());
            steps.insert(
                step.name.clone(),
                LockedStep {
                    kind: s.kind.clone(),
                    key: s.key.expect("checked"),
                    output: s.artifact.expect("checked"),
                    pin,
                    key_json: store.record(&s.key.expect("checked")).map(|r| r.key_json),
                },
            );
        } else if let Some(prev) = previous.and_then(|l| l.steps.get(&step.name)) {
            steps.insert(step.name.clone(), prev.clone());
        }
    }
    Lockfile {
        version: crate::lockfile::LOCK_VERSION,
        pipeline: pipeline.name.clone(),
        numerics: numerics.clone(),
        steps,
    }
}
