//! Checkpoints in the step's scratch folder: enough to resume a killed run and finish bit-identical.
//!
//! ```text
//! scratch/
//!   latest                     the name of the newest complete checkpoint
//!   checkpoint-<step>/
//!     state.json               step, per-parameter AdamW step counts, loss history, log lines
//!     tensors.safetensors      trained parameters (f32 master values) and AdamW moments
//! ```
//!
//! A checkpoint is written into `checkpoint-<step>.tmp/`, synced, renamed, and only then named in
//! `latest` (itself replaced by an atomic rename), so a kill at any moment leaves the previous
//! checkpoint usable. The data cursor is the step number (batches are a function of seed and step),
//! and randomness is reseeded from (seed, step), so nothing else needs saving.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::trainer::HostTensor;
use lf_model::llama::TensorSource as _;
use lf_model::load::{SafetensorsSource, SaveDtype, write_safetensors};

/// Layout version of checkpoints (2: step records carry their objective's metrics).
pub const VERSION: u32 = 2;

/// One optimizer step, as recorded in `trainer_state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// 1-based step number.
    pub step: usize,
    /// Mean loss over the step's trained tokens.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Trained tokens in the step.
    pub tokens: usize,
    /// The objective's other numbers (`rewards/chosen`, `accuracy`, ...), means over the step.
    #[serde(flatten)]
    pub metrics: BTreeMap<String, f64>,
}

/// Everything but the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// [`VERSION`].
    pub version: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// Names of the trained parameters, in order.
    pub names: Vec<String>,
    /// AdamW step count of each trained parameter.
    pub slot_steps: Vec<u64>,
    /// Every step so far (floats as their bits: JSON numbers do not round-trip exactly through
    /// serde_json, and the history ends up in the hashed `trainer_state.json`).
    #[serde(with = "exact_history")]
    pub history: Vec<StepRecord>,
    /// Lines of `logs/metrics.jsonl` so far.
    pub logs: Vec<Json>,
}

mod exact_history {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::StepRecord;

    type Bits = (usize, u64, u64, u64, usize, Vec<(String, u64)>);

    pub fn serialize<S: Serializer>(h: &[StepRecord], s: S) -> Result<S::Ok, S::Error> {
        h.iter()
            .map(|r| {
                (
                    r.step,
                    r.loss.to_bits(),
                    r.lr.to_bits(),
                    r.grad_norm.to_bits(),
                    r.tokens,
                    r.metrics
                        .iter()
                        .map(|(k, v)| (k.clone(), v.to_bits()))
                        .collect(),
                )
            })
            .collect::<Vec<Bits>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<StepRecord>, D::Error> {
        Ok(Vec::<Bits>::deserialize(d)?
            .into_iter()
            .map(|(step, loss, lr, grad_norm, tokens, metrics)| StepRecord {
                step,
                loss: f64::from_bits(loss),
                lr: f64::from_bits(lr),
                grad_norm: f64::from_bits(grad_norm),
                tokens,
                metrics: metrics
                    .into_iter()
                    .map(|(k, v)| (k, f64::from_bits(v)))
                    .collect(),
            })
            .collect())
    }
}

/// A checkpoint read back.
pub struct Checkpoint {
    /// The state.
    pub state: CheckpointState,
    tensors: SafetensorsSource,
}

impl Checkpoint {
    /// Reads tensor `name` of `shape`.
    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> anyhow::Result<Vec<f32>> {
        Ok(self.tensors.tensor(name, shape)?)
    }
}

fn sync_file(path: &Path) -> anyhow::Result<()> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync `{}`", path.display()))
}

fn sync_dir(path: &Path) {
    if let Ok(d) = fs::File::open(path) {
        let _ = d.sync_all();
    }
}

/// Writes a checkpoint of `state` and `tensors` into `scratch` and makes it the latest.
pub fn save(
    scratch: &Path,
    state: &CheckpointState,
    tensors: Vec<HostTensor>,
) -> anyhow::Result<()> {
    fs::create_dir_all(scratch)?;
    let name = format!("checkpoint-{}", state.step);
    let tmp = scratch.join(format!("{name}.tmp"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    let named = tensors
        .into_iter()
        .map(|t| (t.name, t.values, t.shape))
        .collect();
    let tensors_path = tmp.join("tensors.safetensors");
    write_safetensors(&tensors_path, named, SaveDtype::F32)?;
    sync_file(&tensors_path)?;
    let state_path = tmp.join("state.json");
    fs::write(&state_path, serde_json::to_vec(state)?)?;
    sync_file(&state_path)?;
    sync_dir(&tmp);
    let dest = scratch.join(&name);
    if dest.exists() {
        fs::remove_dir_all(&dest)?;
    }
    fs::rename(&tmp, &dest)?;
    sync_dir(scratch);
    let latest_tmp = scratch.join("latest.tmp");
    {
        let mut f = fs::File::create(&latest_tmp)?;
        f.write_all(name.as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&latest_tmp, scratch.join("latest"))?;
    sync_dir(scratch);
    // Older checkpoints are no longer needed.
    for entry in fs::read_dir(scratch)?.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with("checkpoint-") && n != name {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    Ok(())
}

/// The latest complete checkpoint in `scratch`, if any.
pub fn load(scratch: &Path) -> anyhow::Result<Option<Checkpoint>> {
    let latest = scratch.join("latest");
    let Ok(name) = fs::read_to_string(&latest) else {
        return Ok(None);
    };
    let dir: PathBuf = scratch.join(name.trim());
    let text = fs::read(dir.join("state.json"))
        .with_context(|| format!("cannot read checkpoint `{}`", dir.display()))?;
    let state: CheckpointState = serde_json::from_slice(&text)
        .with_context(|| format!("checkpoint `{}` is damaged", dir.display()))?;
    anyhow::ensure!(
        state.version == VERSION,
        "checkpoint `{}` has layout version {}, this lf writes {VERSION}",
        dir.display(),
        state.version
    );
    let tensors = SafetensorsSource::open_file(&dir.join("tensors.safetensors"))?;
    Ok(Some(Checkpoint { state, tensors }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_checkpoint_wins_and_older_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        let state = |step| CheckpointState {
            version: VERSION,
            step,
            names: vec!["w".into()],
            slot_steps: vec![step as u64],
            history: vec![StepRecord {
                step,
                loss: 0.1 + 0.2,
                lr: 1.0 / 3.0,
                grad_norm: 0.000993103448275862,
                tokens: 7,
                metrics: BTreeMap::from([("rewards/margins".to_string(), 0.1 + 0.7)]),
            }],
            logs: vec![],
        };
        let t = |v: f32| {
            vec![HostTensor {
                name: "param/w".into(),
                values: vec![v, v + 1.0],
                shape: vec![2],
            }]
        };
        save(dir.path(), &state(3), t(1.0)).unwrap();
        save(dir.path(), &state(6), t(5.0)).unwrap();
        // A half-written checkpoint does not count.
        fs::create_dir_all(dir.path().join("checkpoint-9.tmp")).unwrap();
        let mut c = load(dir.path()).unwrap().unwrap();
        assert_eq!(c.state, state(6));
        assert_eq!(c.tensor("param/w", &[2]).unwrap(), vec![5.0, 6.0]);
        assert!(!dir.path().join("checkpoint-3").exists());
    }
}
