//! A small harness that drives the real `lf` binary in a temporary project folder.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// A temporary project: manifests and data live here, and so do `.lf/` and `runs/`.
pub struct Project {
    pub dir: tempfile::TempDir,
}

/// What a finished `lf` command did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Status of each step from `lf run --json`.
    pub fn statuses(&self) -> Vec<(String, String)> {
        self.json()["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub fn status_of(&self, step: &str) -> String {
        self.statuses()
            .into_iter()
            .find(|(n, _)| n == step)
            .map(|(_, s)| s)
            .unwrap_or_else(|| panic!("no step `{step}` in {:?}", self.statuses()))
    }
}

impl Project {
    pub fn new() -> Project {
        Project {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(rel)).unwrap_or_default()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lf"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LF_STORE", self.dir.path().join(".lf"))
            .env("LF_RUNS_DIR", self.dir.path().join("runs"))
            .env("HF_HUB_CACHE", self.dir.path().join("hf-cache"))
            .env("HF_HUB_OFFLINE", "1")
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn lf(&self, args: &[&str]) -> Run {
        self.lf_env(args, &[])
    }

    /// `lf ARGS` with extra environment variables.
    pub fn lf_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out: Output = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// The lockfile of `manifest` (e.g. `p.yaml` → `p.lock`) as YAML.
    pub fn lock(&self, manifest: &str) -> serde_yaml::Value {
        let path = self.dir.path().join(manifest).with_extension("lock");
        serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    /// Output hash of each step in the lockfile.
    pub fn outputs(&self, manifest: &str) -> Vec<(String, String)> {
        let lock = self.lock(manifest);
        lock["steps"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    v["output"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

/// Asserts a run succeeded, printing its output otherwise.
#[track_caller]
pub fn ok(run: &Run) {
    assert_eq!(
        run.code, 0,
        "lf failed:\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

/// The steps most integration manifests start from, as lines under `steps:`: `tok`, a BPE tokenizer
/// of 320 tokens trained on the built-in corpus, and `base`, a seeded 2-layer Llama of width 32.
pub const TINY_STEPS: &str = "  tok:
    kind: tokenizer
    source: builtin:corpus
    vocab_size: 320
  base:
    kind: model
    tokenizer: tok
    hidden_size: 32
    intermediate_size: 64
    num_hidden_layers: 2
    num_attention_heads: 2
";
