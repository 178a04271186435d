//! Server-sent events that follow a pipeline's runs: `state` (the run in progress, from
//! `runs/<pipeline>/live.json`, or the last run's record) whenever it changes, and `metrics` (new lines
//! of each training step's `logs/metrics.jsonl`, from its staging folder while it runs, from its
//! artifact afterwards).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use lf_engine::record::{LIVE_FILE, LiveRun, LiveStatus};
use serde_json::{Value as Json, json};

use super::files::Roots;

/// How often the files are looked at.
const TICK: Duration = Duration::from_millis(400);

/// Where a step's metrics were read from, and how far.
struct Source {
    path: PathBuf,
    offset: u64,
}

/// One client's view of a pipeline.
struct Follow {
    roots: Roots,
    pipeline: String,
    last_state: Option<Json>,
    sources: BTreeMap<String, Source>,
}

/// The events of `pipeline`, every [`TICK`], for as long as the client listens.
pub fn stream(roots: Roots, pipeline: String) -> impl Stream<Item = Result<Event, Infallible>> {
    let follow = Follow {
        roots,
        pipeline,
        last_state: None,
        sources: BTreeMap::new(),
    };
    futures::stream::unfold((follow, true), |(follow, first)| async move {
        if !first {
            tokio::time::sleep(TICK).await;
        }
        let (follow, events) = tokio::task::spawn_blocking(move || {
            let mut follow = follow;
            let events = follow.tick();
            (follow, events)
        })
        .await
        .ok()?;
        Some((
            futures::stream::iter(events.into_iter().map(Ok)),
            (follow, false),
        ))
    })
    .flatten()
}

/// The state of a pipeline's runs: the run in progress or the last one (`live`, with `alive` false
/// for a run whose process is gone before it finished), and the last run's record (`last`).
pub fn state(roots: &Roots, pipeline: &str) -> Json {
    let dir = roots.runs_dir.join(pipeline);
    let live: Option<LiveRun> = std::fs::read(dir.join(LIVE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let alive = live
        .as_ref()
        .is_some_and(|l| !l.finished && process_alive(l.pid));
    let last: Option<Json> = std::fs::read(dir.join("run.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    json!({"live": live, "alive": alive, "last": last})
}

impl Follow {
    fn tick(&mut self) -> Vec<Event> {
        let mut events = Vec::new();
        let state = state(&self.roots, &self.pipeline);
        let sources = self.sources(&state);
        if self.last_state.as_ref() != Some(&state) {
            events.push(Event::default().event("state").data(state.to_string()));
            self.last_state = Some(state);
        }
        for (step, path) in sources {
            let reset = self.sources.get(&step).is_none_or(|s| s.path != path);
            if reset {
                self.sources.insert(
                    step.clone(),
                    Source {
                        path: path.clone(),
                        offset: 0,
                    },
                );
            }
            let source = self.sources.get_mut(&step).expect("inserted above");
            let (lines, offset, restarted) = read_lines(&path, source.offset);
            let reset = reset || restarted;
            if lines.is_empty() && !reset {
                continue;
            }
            source.offset = offset;
            events.push(
                Event::default()
                    .event("metrics")
                    .data(json!({"step": step, "reset": reset, "lines": lines}).to_string()),
            );
        }
        events
    }

    /// The metrics file of each step: its staging folder's while it runs, its artifact's once it ran
    /// or was cached (a step that waits, failed or was skipped has none in this run).
    fn sources(&self, state: &Json) -> Vec<(String, PathBuf)> {
        let live: Option<LiveRun> = serde_json::from_value(state["live"].clone()).ok();
        let steps: Vec<(String, Option<PathBuf>)> = match live {
            Some(l) => l
                .steps
                .into_iter()
                .filter_map(|s| match s.status {
                    LiveStatus::Running => s.out_dir.map(|d| (s.name, Some(d))),
                    LiveStatus::Cached | LiveStatus::Ran => Some((s.name, None)),
                    LiveStatus::Waiting | LiveStatus::Failed | LiveStatus::Skipped => None,
                })
                .collect(),
            None => state["last"]["steps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["status"] == "ran" || s["status"] == "cached")
                .filter_map(|s| s["name"].as_str().map(|n| (n.to_string(), None)))
                .collect(),
        };
        steps
            .into_iter()
            .filter_map(|(name, staging)| {
                let path = match staging {
                    Some(dir) => self.roots.staging_file(&dir, "logs/metrics.jsonl"),
                    None => self.roots.file(&self.pipeline, &name, "logs/metrics.jsonl"),
                }?;
                Some((name, path))
            })
            .collect()
    }
}

/// The complete JSON lines of `path` after byte `offset`, the offset after them, and whether the file
/// was read from the start again because it is now shorter than `offset` (rewritten).
fn read_lines(path: &Path, offset: u64) -> (Vec<Json>, u64, bool) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (Vec::new(), offset, false);
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let restarted = len < offset;
    let start = if restarted { 0 } else { offset };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return (Vec::new(), offset, false);
    }
    let Some(end) = bytes.iter().rposition(|&b| b == b'\n') else {
        return (Vec::new(), start, restarted);
    };
    let lines = bytes[..end]
        .split(|&b| b == b'\n')
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect();
    (lines, start + end as u64 + 1, restarted)
}

/// Whether a process still runs (not a zombie). Without `/proc`, assumed.
fn process_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_once_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.jsonl");
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"st").unwrap();
        let (lines, offset, restarted) = read_lines(&path, 0);
        assert_eq!(lines, [json!({"step": 1}), json!({"step": 2})]);
        assert!(!restarted);
        let (more, same, _) = read_lines(&path, offset);
        assert!(more.is_empty());
        assert_eq!(same, offset);
        std::fs::write(&path, "{\"step\":1}\n{\"step\":2}\n{\"step\":3}\n").unwrap();
        assert_eq!(read_lines(&path, offset).0, [json!({"step": 3})]);
        std::fs::write(&path, "{\"step\":9}\n").unwrap();
        let (lines, _, restarted) = read_lines(&path, offset);
        assert_eq!(lines, [json!({"step": 9})], "a shorter file starts over");
        assert!(restarted);
    }

    #[test]
    fn this_process_is_alive_and_a_finished_one_is_not() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }
}
