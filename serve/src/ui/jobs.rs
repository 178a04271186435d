//! Runs the dashboard started: `lf run` processes, their output, their end, and cancelling them.
//!
//! Cancelling kills the `lf` process (SIGKILL): lf is safe to kill at any point (nothing half-written
//! is ever used, a training step resumes from its checkpoint), and the programs of `command` steps die
//! with it.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// How much of a run's output is kept.
const LOG_BYTES: usize = 64 * 1024;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The process runs.
    Running,
    /// It exited with 0.
    Succeeded,
    /// It exited otherwise.
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// A run the dashboard started.
pub struct Job {
    id: u64,
    pipeline: String,
    command: String,
    started_unix_ms: u128,
    child: Mutex<Option<Child>>,
    status: Mutex<(State, Option<i32>)>,
    log: Mutex<String>,
}

/// What the page sees of a run.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    /// Its number.
    pub id: u64,
    /// The pipeline's name.
    pub pipeline: String,
    /// The command line.
    pub command: String,
    /// When it started.
    pub started_unix_ms: u128,
    /// Where it stands.
    pub state: State,
    /// Its exit status, once it has one.
    pub exit_code: Option<i32>,
    /// The end of its output (stderr and stdout).
    pub log: String,
}

impl Job {
    fn view(&self) -> JobView {
        let (state, exit_code) = *self.status.lock().unwrap();
        JobView {
            id: self.id,
            pipeline: self.pipeline.clone(),
            command: self.command.clone(),
            started_unix_ms: self.started_unix_ms,
            state,
            exit_code,
            log: self.log.lock().unwrap().clone(),
        }
    }

    fn append(&self, line: &str) {
        let mut log = self.log.lock().unwrap();
        log.push_str(line);
        log.push('\n');
        if log.len() > LOG_BYTES {
            let mut cut = log.len() - LOG_BYTES;
            while !log.is_char_boundary(cut) {
                cut += 1;
            }
            log.drain(..cut);
        }
    }
}

/// Every run started by this dashboard.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU64,
    list: Mutex<Vec<Arc<Job>>>,
}

impl Jobs {
    /// Starts `cmd` as a run of `pipeline`, shown as `command`; refuses while another run of the same
    /// pipeline started here is running.
    pub fn start(
        &self,
        pipeline: &str,
        command: String,
        mut cmd: Command,
    ) -> Result<JobView, String> {
        let mut list = self.list.lock().unwrap();
        if let Some(other) = list
            .iter()
            .find(|j| j.pipeline == pipeline && j.status.lock().unwrap().0 == State::Running)
        {
            return Err(format!(
                "run {} of `{pipeline}` is still running; cancel it or wait",
                other.id
            ));
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start `{command}`: {e}"))?;
        let job = Arc::new(Job {
            id: self.next.fetch_add(1, Ordering::SeqCst) + 1,
            pipeline: pipeline.to_string(),
            command,
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            status: Mutex::new((State::Running, None)),
            log: Mutex::new(String::new()),
            child: Mutex::new(None),
        });
        let outputs: [Option<Box<dyn Read + Send>>; 2] = [
            child.stderr.take().map(|s| Box::new(s) as _),
            child.stdout.take().map(|s| Box::new(s) as _),
        ];
        for out in outputs.into_iter().flatten() {
            let job = job.clone();
            std::thread::spawn(move || {
                // Lines as they come, whatever their bytes: the pipe is read to its end, so the
                // process never blocks on it.
                let mut reader = BufReader::new(out);
                let mut line = Vec::new();
                while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                    let text = String::from_utf8_lossy(&line);
                    job.append(text.trim_end_matches(['\n', '\r']));
                    line.clear();
                }
            });
        }
        *job.child.lock().unwrap() = Some(child);
        let watched = job.clone();
        std::thread::spawn(move || watch(&watched));
        list.push(job.clone());
        Ok(job.view())
    }

    /// Cancels a running run; `None` if there is no such run, `Some(false)` if it had already ended.
    pub fn cancel(&self, id: u64) -> Option<bool> {
        let job = self
            .list
            .lock()
            .unwrap()
            .iter()
            .find(|j| j.id == id)?
            .clone();
        let mut status = job.status.lock().unwrap();
        if status.0 != State::Running {
            return Some(false);
        }
        if let Some(child) = job.child.lock().unwrap().as_mut() {
            // A process that has exited but is not reaped yet ended on its own.
            if child.try_wait().is_ok_and(|exit| exit.is_some()) {
                return Some(false);
            }
            let _ = child.kill();
        }
        status.0 = State::Cancelled;
        Some(true)
    }

    /// Every run, newest first.
    pub fn list(&self) -> Vec<JobView> {
        let mut views: Vec<JobView> = self.list.lock().unwrap().iter().map(|j| j.view()).collect();
        views.reverse();
        views
    }
}

/// Waits for the process to end and records how it ended.
fn watch(job: &Job) {
    loop {
        let ended = job.child.lock().unwrap().as_mut().map(|c| c.try_wait());
        match ended {
            Some(Ok(Some(exit))) => {
                let mut status = job.status.lock().unwrap();
                status.1 = exit.code();
                if status.0 == State::Running {
                    status.0 = if exit.success() {
                        State::Succeeded
                    } else {
                        State::Failed
                    };
                }
                return;
            }
            Some(Ok(None)) => std::thread::sleep(Duration::from_millis(200)),
            Some(Err(_)) | None => {
                job.status.lock().unwrap().0 = State::Failed;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_for(jobs: &Jobs, id: u64, state: State) -> JobView {
        for _ in 0..200 {
            let v = jobs.list().into_iter().find(|j| j.id == id).unwrap();
            if v.state == state
                && (state == State::Running || v.exit_code.is_some() || state == State::Cancelled)
            {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("job {id} never reached {state:?}");
    }

    #[test]
    fn runs_end_and_report_their_output() {
        let jobs = Jobs::default();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let v = jobs.start("p", "sh".into(), cmd).unwrap();
        let done = wait_for(&jobs, v.id, State::Failed);
        assert_eq!(done.exit_code, Some(3));
        // Both streams end up in the log (the readers may trail the exit by a moment).
        for _ in 0..100 {
            let log = jobs.list()[0].log.clone();
            if log.contains("out") && log.contains("err") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("log: {:?}", jobs.list()[0].log);
    }

    #[test]
    fn a_pipeline_runs_once_at_a_time_and_runs_can_be_cancelled() {
        let jobs = Jobs::default();
        let sleep = || {
            let mut c = Command::new("sleep");
            c.arg("30");
            c
        };
        let v = jobs.start("p", "sleep".into(), sleep()).unwrap();
        assert!(jobs.start("p", "sleep".into(), sleep()).is_err());
        assert_eq!(jobs.cancel(v.id), Some(true));
        assert_eq!(jobs.cancel(v.id), Some(false));
        assert_eq!(jobs.cancel(999), None);
        wait_for(&jobs, v.id, State::Cancelled);
        let again = jobs.start("p", "sleep".into(), sleep()).unwrap();
        jobs.cancel(again.id);
    }
}
