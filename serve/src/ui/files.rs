//! Artifacts as the dashboard reads them: only through the `runs/<pipeline>/<step>` links, and only
//! files that really are inside the store or the runs folder (no `..`, no link leading elsewhere).

use std::path::{Component, Path, PathBuf};

use serde::Serialize;

/// Whether `s` can be a pipeline or step name in a URL: letters, digits, `_`, `-`, `.`, not starting
/// with `.` or `-`.
pub fn safe_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(['.', '-'])
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Where the dashboard may read.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The runs folder.
    pub runs_dir: PathBuf,
    /// The store.
    pub store: PathBuf,
}

impl Roots {
    /// The artifact a step's link points at (its real path), if there is one in the store.
    pub fn artifact(&self, pipeline: &str, step: &str) -> Option<PathBuf> {
        if !safe_name(pipeline) || !safe_name(step) {
            return None;
        }
        let real = self
            .runs_dir
            .join(pipeline)
            .join(step)
            .canonicalize()
            .ok()?;
        let objects = self.store.join("objects").canonicalize().ok()?;
        (real.parent()? == objects && real.is_dir()).then_some(real)
    }

    /// A file of a step's artifact, by its path inside the artifact.
    pub fn file(&self, pipeline: &str, step: &str, rel: &str) -> Option<PathBuf> {
        let artifact = self.artifact(pipeline, step)?;
        let rel = Path::new(rel);
        if rel.as_os_str().is_empty()
            || !rel.components().all(|c| matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let real = artifact.join(rel).canonicalize().ok()?;
        (real.starts_with(&artifact) && real.is_file()).then_some(real)
    }

    /// A file the run in progress writes (`out_dir` of `live.json`): only inside the store's staging
    /// folder.
    pub fn staging_file(&self, out_dir: &Path, rel: &str) -> Option<PathBuf> {
        let tmp = self.store.join("tmp").canonicalize().ok()?;
        let real = out_dir.join(rel).canonicalize().ok()?;
        (real.starts_with(&tmp) && real.is_file()).then_some(real)
    }
}

/// A file of an artifact.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its path inside the artifact (`/`-separated).
    pub path: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// The files of an artifact folder, sorted, at most `limit` of them (links are not followed).
pub fn list(dir: &Path, limit: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() && out.len() < limit {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                out.push(Entry {
                    path: rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                    bytes: meta.len(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain() {
        for ok in ["quickstart", "sft", "identity-data", "v1.2", "a_b"] {
            assert!(safe_name(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "%2e"] {
            assert!(!safe_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_files_inside_the_artifact_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let roots = Roots {
            runs_dir: dir.path().join("runs"),
            store: dir.path().join("store"),
        };
        let object = roots.store.join("objects/abc");
        std::fs::create_dir_all(object.join("logs")).unwrap();
        std::fs::create_dir_all(roots.runs_dir.join("p")).unwrap();
        std::fs::write(object.join("logs/m.jsonl"), "{}").unwrap();
        std::fs::write(dir.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), object.join("leak")).unwrap();
        std::os::unix::fs::symlink(&object, roots.runs_dir.join("p/s")).unwrap();
        std::os::unix::fs::symlink(dir.path(), roots.runs_dir.join("p/outside")).unwrap();
        assert!(roots.file("p", "s", "logs/m.jsonl").is_some());
        for rel in [
            "../secret",
            "logs/../../secret",
            "/etc/passwd",
            "leak",
            "logs",
            "",
        ] {
            assert!(roots.file("p", "s", rel).is_none(), "{rel}");
        }
        assert!(roots.artifact("p", "outside").is_none());
        assert!(roots.artifact("..", "s").is_none());
        assert_eq!(list(&object, 10).len(), 1, "the link is not listed");
    }
}
