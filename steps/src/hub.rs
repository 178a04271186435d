//! The Hugging Face hub and its local cache, through the `hf-hub` crate.
//!
//! The cache is the standard one the Python client uses (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), laid out as
//! `models--org--name/{refs/<revision>, blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>}`,
//! so models downloaded by either tool are shared.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Cache, Repo, RepoType};
use lf_schemas::kinds::download::RepoType as Kind;

/// The hub cache folder, from the environment.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("huggingface").join("hub")
}

/// A repository on the hub and in the local cache.
pub struct HubRepo {
    /// `org/name`.
    pub id: String,
    /// Model or dataset.
    pub kind: Kind,
    /// The cache folder.
    pub cache: PathBuf,
}

/// Whether `s` is a full commit sha.
pub fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl HubRepo {
    /// A repository in the cache from the environment.
    pub fn new(id: &str, kind: Kind) -> HubRepo {
        HubRepo {
            id: id.to_string(),
            kind,
            cache: cache_dir(),
        }
    }

    fn repo_type(&self) -> RepoType {
        match self.kind {
            Kind::Model => RepoType::Model,
            Kind::Dataset => RepoType::Dataset,
        }
    }

    /// `models--org--name` under the cache.
    pub fn folder(&self) -> PathBuf {
        self.cache
            .join(Repo::new(self.id.clone(), self.repo_type()).folder_name())
    }

    /// The commit a revision points at in the local cache (`refs/<revision>`).
    pub fn cached_commit(&self, revision: &str) -> Option<String> {
        if is_commit(revision) && self.folder().join("snapshots").join(revision).is_dir() {
            return Some(revision.to_string());
        }
        let text = std::fs::read_to_string(self.folder().join("refs").join(revision)).ok()?;
        let sha = text.trim();
        is_commit(sha).then(|| sha.to_string())
    }

    /// The snapshot folder of a commit.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.folder().join("snapshots").join(commit)
    }

    fn api(&self) -> anyhow::Result<Api> {
        let mut builder = ApiBuilder::from_cache(Cache::new(self.cache.clone()))
            .with_progress(false)
            .with_retries(2);
        if let Ok(endpoint) = std::env::var("HF_ENDPOINT")
            && !endpoint.is_empty()
        {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
        }
        builder = builder.with_token(token(&self.cache));
        builder.build().context("cannot set up the hub client")
    }

    /// Asks the hub which commit `revision` is, and which files it has.
    pub fn remote_info(&self, revision: &str) -> anyhow::Result<(String, Vec<String>)> {
        let api = self.api()?;
        let info = api
            .repo(Repo::with_revision(
                self.id.clone(),
                self.repo_type(),
                revision.to_string(),
            ))
            .info()
            .with_context(|| format!("cannot reach the hub for `{}` at `{revision}`", self.id))?;
        anyhow::ensure!(
            is_commit(&info.sha),
            "the hub answered `{}` for the commit of `{}`",
            info.sha,
            self.id
        );
        Ok((
            info.sha,
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
        ))
    }

    /// Downloads one file of a commit into the cache (or finds it there) and returns its snapshot path.
    pub fn fetch(&self, commit: &str, file: &str) -> anyhow::Result<PathBuf> {
        let local = self.snapshot(commit).join(file);
        if local.exists() {
            return Ok(local);
        }
        let api = self.api()?;
        api.repo(Repo::with_revision(
            self.id.clone(),
            self.repo_type(),
            commit.to_string(),
        ))
        .download(file)
        .with_context(|| format!("cannot download `{file}` of `{}`", self.id))
    }

    /// Records `refs/<revision>` = `commit` in the cache, as the hub client does, so offline runs (of lf
    /// or of Python tools) find the revision later.
    pub fn write_ref(&self, revision: &str, commit: &str) -> anyhow::Result<()> {
        if is_commit(revision) {
            return Ok(());
        }
        let path = self.folder().join("refs").join(revision);
        std::fs::create_dir_all(path.parent().expect("refs has a parent"))?;
        std::fs::write(&path, commit)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        Ok(())
    }

    /// Files of a commit present in the local cache, relative to the snapshot.
    pub fn cached_files(&self, commit: &str) -> Vec<String> {
        let root = self.snapshot(commit);
        let mut out = Vec::new();
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, out);
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The hub token: `HF_TOKEN`, else the token file next to the cache (`HF_HOME/token`).
fn token(cache: &Path) -> Option<String> {
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.trim().is_empty()
    {
        return Some(token.trim().to_string());
    }
    let file = std::env::var_os("HF_TOKEN_PATH")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HF_HOME").map(|h| PathBuf::from(h).join("token")))
        .unwrap_or_else(|| cache.parent().unwrap_or(cache).join("token"));
    std::fs::read_to_string(file)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}
