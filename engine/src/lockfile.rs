//! The lockfile written next to a manifest: pinned remote revisions, per-step keys and output hashes.
//!
//! `lf run --locked` checks a run against it: any step whose key or output differs fails the run with a
//! readable difference. This is how CI proves a pipeline reproducible.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lf_cache::Hash;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::numerics::Numerics;

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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir.path().join("p.yaml"));
        assert!(path.ends_with("p.lock"));
        let lock = Lockfile {
            version: LOCK_VERSION,
            pipeline: "p".into(),
            numerics: Numerics {
                device: "cpu".into(),
                dtype: "f32".into(),
                backend: "flex".into(),
            },
            steps: [(
                "a".to_string(),
                LockedStep {
                    kind: "download".into(),
                    key: Hash::of_bytes(b"k"),
                    output: Hash::of_bytes(b"o"),
                    pin: Some(serde_json::json!({"commit": "abc"})),
                },
            )]
            .into(),
        };
        lock.write(&path).unwrap();
        assert_eq!(Lockfile::read(&path).unwrap().unwrap(), lock);
        assert_eq!(lock.pins()["a"]["commit"], "abc");
    }
}
