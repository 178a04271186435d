//! The lockfile written next to a manifest: pinned remote revisions, per-step keys and output hashes.
//!
//! `lf run --locked` checks a run against it ([`Lockfile::drift`] before anything runs, the outputs as steps
//! finish): any step whose key or output differs fails the run with a readable difference. This is how CI
//! proves a pipeline reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lf_cache::{Hash, Store};
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::numerics::Numerics;
use crate::pipeline::Pipeline;
use crate::plan::{Plan, explain};

/// Version of the lockfile format.
pub const LOCK_VERSION: u32 = 1;

/// A pipeline's lockfile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lockfile {
    /// Format version.
    pub version: u32,
    /// The pipeline's name.
    pub pipeline: String,
    /// Numerics the keys were computed for.
    pub numerics: Numerics,
    /// Per step, by name.
    pub steps: BTreeMap<String, LockedStep>,
}

/// What a different key is put down to when nothing tells what it was computed from.
pub const UNEXPLAINED: &str = "parameters, inputs or the implementation differ";

/// One step in a lockfile.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LockedStep {
    /// Step kind.
    pub kind: String,
    /// Cache key.
    pub key: Hash,
    /// Content hash of the artifact.
    pub output: Hash,
    /// Pinned remote identity (hub commit), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Json>,
    /// What the key is the hash of (its canonical JSON), so that a different key can be explained
    /// field by field on a machine whose store never saw it (CI). Absent in lockfiles before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_json: Option<Json>,
}

impl LockedStep {
    /// Why `json` (a key computed now) differs from this locked key: from the store's record of the
    /// locked key, else from the lockfile's own copy of its JSON; `None` when neither is there.
    pub fn explain(
        &self,
        store: &Store,
        json: &Json,
        pipeline: &Pipeline,
        i: usize,
    ) -> Option<String> {
        let prev = store
            .record(&self.key)
            .map(|r| r.key_json)
            .or_else(|| self.key_json.clone())?;
        Some(explain(&prev, json, pipeline, i).join("; "))
    }
}

/// Where the lockfile of a manifest lives: `pipelines/sft.yaml` → `pipelines/sft.lock`.
pub fn lock_path(manifest: &Path) -> PathBuf {
    manifest.with_extension("lock")
}

impl Lockfile {
    /// Reads a lockfile; absent is `None`.
    pub fn read(path: &Path) -> anyhow::Result<Option<Lockfile>> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let lock: Lockfile = serde_yaml::from_str(&text).map_err(|e| {
                    anyhow::anyhow!("cannot read lockfile `{}`: {e}", path.display())
                })?;
                Ok(Some(lock))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(anyhow::Error::new(e).context(format!("cannot read `{}`", path.display())))
            }
        }
    }

    /// Writes it atomically, with a header comment.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let body = serde_yaml::to_string(self)?;
        let text = format!(
            "# Written by `lf run`: pinned inputs, cache keys and output hashes of each step.\n\
             # Commit it; `lf run --locked` fails if a run differs from it.\n{body}"
        );
        lf_cache::write_atomic(path, text.as_bytes())?;
        Ok(())
    }

    /// Pins by step name.
    pub fn pins(&self) -> BTreeMap<String, Json> {
        self.steps
            .iter()
            .filter_map(|(name, s)| s.pin.clone().map(|p| (name.clone(), p)))
            .collect()
    }

    /// How `plan` differs from this lockfile, one readable line per difference: other numerics, a planned
    /// step the lockfile lacks, a remote input that now resolves elsewhere, or a different cache key
    /// (explained from the locked key's record, or the lockfile's copy of its JSON). Empty when `lf run --locked`
    /// may go ahead; outputs are compared later, as steps finish.
    pub fn drift(&self, pipeline: &Pipeline, plan: &Plan, store: &Store) -> Vec<String> {
        let numerics = &plan.numerics;
        let mut drift = Vec::new();
        if &self.numerics != numerics {
            drift.push(format!(
                "numerics are {}/{}/{} but the lockfile has {}/{}/{}",
                numerics.device,
                numerics.dtype,
                numerics.backend,
                self.numerics.device,
                self.numerics.dtype,
                self.numerics.backend
            ));
        }
        for &i in &plan.order {
            let step = &pipeline.steps[i];
            let planned = plan.steps[i].as_ref().expect("ordered steps are planned");
            match self.steps.get(&step.name) {
                None => drift.push(format!("step `{}` is not in the lockfile", step.name)),
                Some(l) if l.pin != planned.pin => drift.push(format!(
                    "step `{}`: remote input resolves to {} but the lockfile has {}",
                    step.name,
                    planned
                        .pin
                        .as_ref()
                        .map_or("nothing".into(), Json::to_string),
                    l.pin.as_ref().map_or("nothing".into(), Json::to_string)
                )),
                Some(l) => {
                    if let Some(key) = &planned.key
                        && key.hash != l.key
                    {
                        let why = l
                            .explain(store, &key.json, pipeline, i)
                            .unwrap_or_else(|| UNEXPLAINED.into());
                        drift.push(format!(
                            "step `{}`: cache key differs from the lockfile: {why}",
                            step.name
                        ));
                    }
                }
            }
        }
        drift
    }
}

#[cfg(test)]
mod tests {
    use lf_schemas::kinds::CommandParams;
    use lf_schemas::{Device, Dtype};

    use super::*;
    use crate::plan::{self, PlanOptions};
    use crate::step::{Registry, Step, StepContext};

    /// A step kind that is never run: planning only needs its parameters.
    struct Command;

    impl Step for Command {
        type Params = CommandParams;
        const KIND: &'static str = "command";
        const VERSION: u32 = 1;
        const ABOUT: &'static str = "test";

        fn run(&self, _: &CommandParams, _: &mut StepContext<'_>) -> anyhow::Result<()> {
            unreachable!("drift tests only plan")
        }
    }

    fn cpu() -> Numerics {
        Numerics {
            device: Device::Cpu,
            dtype: Dtype::F32,
            backend: "flex".into(),
        }
    }

    /// Plans `a → b` (two commands) against an empty store, and the lockfile that run would write.
    fn planned(store: &Store) -> (Pipeline, Plan, Lockfile) {
        let text = "name: p\nsteps:\n  a:\n    kind: command\n    run: echo a\n  b:\n    kind: command\n    run: echo b\n    inputs: {a: a}\n";
        let registry = Registry::new(&[&Command]);
        let pipeline =
            crate::pipeline::load(Path::new("p.yaml"), text, &registry, &BTreeMap::new())
                .unwrap_or_else(|d| panic!("{d:?}"));
        let plan = plan::plan(
            &pipeline,
            store,
            &cpu(),
            &PlanOptions::default(),
            &Default::default(),
            &BTreeMap::new(),
        )
        .unwrap();
        let steps = plan
            .order
            .iter()
            .map(|&i| {
                let p = plan.steps[i].as_ref().unwrap();
                let key = p.key.as_ref().map_or(Hash::of_bytes(b"later"), |k| k.hash);
                let locked = LockedStep {
                    kind: "command".into(),
                    key,
                    output: Hash::of_bytes(b"o"),
                    pin: None,
                    key_json: None,
                };
                (pipeline.steps[i].name.clone(), locked)
            })
            .collect();
        let lock = Lockfile {
            version: LOCK_VERSION,
            pipeline: "p".into(),
            numerics: cpu(),
            steps,
        };
        (pipeline, plan, lock)
    }

    /// The key JSON step `a` had when its command was `echo old` (it is `echo a` now).
    fn key_json_when_a_ran_echo_old(pipeline: &Pipeline, plan: &Plan) -> Json {
        let a = plan.steps[pipeline.index_of("a").unwrap()]
            .as_ref()
            .unwrap();
        let mut json = a.key.as_ref().unwrap().json.clone();
        json["params"]["run"] = "echo old".into();
        json
    }

    #[test]
    fn a_plan_matching_the_lockfile_has_no_drift() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, lock) = planned(&store);
        assert_eq!(lock.drift(&pipeline, &plan, &store), Vec::<String>::new());
    }

    #[test]
    fn drift_names_every_difference() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, mut lock) = planned(&store);
        lock.numerics = Numerics {
            device: Device::Cuda,
            dtype: Dtype::Bf16,
            backend: "cuda".into(),
        };
        lock.steps.get_mut("a").unwrap().key = Hash::of_bytes(b"other");
        lock.steps.remove("b");
        assert_eq!(
            lock.drift(&pipeline, &plan, &store),
            [
                "numerics are cpu/f32/flex but the lockfile has cuda/bf16/cuda",
                "step `a`: cache key differs from the lockfile: parameters, inputs or the implementation differ",
                "step `b` is not in the lockfile",
            ]
        );
    }

    #[test]
    fn a_changed_key_is_explained_from_the_locked_record() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, mut lock) = planned(&store);
        // The lockfile's key for `a` was computed when it ran `echo old`; the store still has its record.
        let old_json = key_json_when_a_ran_echo_old(&pipeline, &plan);
        let old_key = Hash::of_bytes(b"old key");
        let _held = store.lock(&old_key, || {}).unwrap();
        let staging = store.stage(&old_key).unwrap();
        let new = lf_cache::NewRecord {
            kind: "command",
            step: "a",
            wall_s: 0.0,
            metrics: BTreeMap::new(),
            key_json: old_json,
        };
        store.commit(staging, &old_key, new).unwrap();
        lock.steps.get_mut("a").unwrap().key = old_key;
        assert_eq!(
            lock.drift(&pipeline, &plan, &store),
            [
                r#"step `a`: cache key differs from the lockfile: parameter `run` changed from "echo old" to "echo a""#
            ]
        );
    }

    #[test]
    fn a_changed_key_is_explained_from_the_lockfiles_copy_on_a_fresh_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, mut lock) = planned(&store);
        let old_json = key_json_when_a_ran_echo_old(&pipeline, &plan);
        let locked = lock.steps.get_mut("a").unwrap();
        locked.key = Hash::of_bytes(b"a key this store never saw");
        locked.key_json = Some(old_json);
        assert_eq!(
            lock.drift(&pipeline, &plan, &store),
            [
                r#"step `a`: cache key differs from the lockfile: parameter `run` changed from "echo old" to "echo a""#
            ]
        );
    }

    #[test]
    fn a_plan_on_a_fresh_store_explains_a_change_from_the_lockfile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, _) = planned(&store);
        let old_json = key_json_when_a_ran_echo_old(&pipeline, &plan);
        let old_key = Hash::of_bytes(b"a key this store never saw");
        let previous = plan::Previous {
            keys: [("a".to_string(), old_key)].into(),
            key_json: [(old_key, old_json)].into(),
        };
        let replanned = plan::plan(
            &pipeline,
            &store,
            &cpu(),
            &PlanOptions::default(),
            &previous,
            &BTreeMap::new(),
        )
        .unwrap();
        let a = replanned.steps[pipeline.index_of("a").unwrap()]
            .as_ref()
            .unwrap();
        assert_eq!(
            a.reasons,
            [r#"parameter `run` changed from "echo old" to "echo a""#]
        );
    }

    #[test]
    fn a_moved_pin_is_drift_even_before_keys_are_known() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (pipeline, plan, mut lock) = planned(&store);
        // `b`'s key waits for `a`'s output, so only its pin can be compared.
        assert!(
            plan.steps[pipeline.index_of("b").unwrap()]
                .as_ref()
                .unwrap()
                .key
                .is_none()
        );
        lock.steps.get_mut("b").unwrap().pin = Some(serde_json::json!({"commit": "abc"}));
        assert_eq!(
            lock.drift(&pipeline, &plan, &store),
            [r#"step `b`: remote input resolves to nothing but the lockfile has {"commit":"abc"}"#]
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("p.yaml"));
        assert!(path.ends_with("p.lock"));
        let lock = Lockfile {
            version: LOCK_VERSION,
            pipeline: "p".into(),
            numerics: Numerics {
                device: Device::Cpu,
                dtype: Dtype::F32,
                backend: "flex".into(),
            },
            steps: [(
                "a".to_string(),
                LockedStep {
                    kind: "download".into(),
                    key: Hash::of_bytes(b"k"),
                    output: Hash::of_bytes(b"o"),
                    pin: Some(serde_json::json!({"commit": "abc"})),
                    key_json: Some(serde_json::json!({"format": 1})),
                },
            )]
            .into(),
        };
        lock.write(&path).unwrap();
        assert_eq!(Lockfile::read(&path).unwrap().unwrap(), lock);
        assert_eq!(lock.pins()["a"]["commit"], "abc");
    }
}
