//! `download`: a hub repository (through the standard Hugging Face cache) or a local file or folder,
//! made into an artifact.

use anyhow::Context as _;
use globset::{Glob, GlobSet, GlobSetBuilder};
use lf_engine::{PinContext, Problem, Step, StepContext};
use lf_schemas::FieldPath;
use lf_schemas::kinds::DownloadParams;
use serde_json::{Value as Json, json};
use tracing::warn;

use crate::files::{Transfer, transfer};
use crate::hub::{HubRepo, is_commit};

/// The `download` step kind.
pub struct Download;

impl Step for Download {
    type Params = DownloadParams;
    const KIND: &'static str = "download";
    const VERSION: u32 = 1;
    const ABOUT: &'static str =
        "fetch a Hugging Face hub repository, or take a local file or folder";

    fn check(&self, params: &DownloadParams) -> Vec<Problem> {
        let mut problems = Vec::new();
        match (&params.repo, &params.path) {
            (None, None) => problems.push(
                Problem::new(
                    FieldPath::default(),
                    "needs `repo` (a hub id) or `path` (a local file or folder)",
                )
                .hint("for example `repo: HuggingFaceTB/SmolLM2-135M-Instruct`"),
            ),
            (Some(_), Some(_)) => problems.push(Problem::new(
                FieldPath::key("path"),
                "give either `repo` or `path`, not both",
            )),
            (Some(repo), None) => {
                let parts: Vec<&str> = repo.split('/').collect();
                let valid = parts.len() <= 2
                    && parts.iter().all(|p| {
                        !p.is_empty()
                            && p.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    });
                if !valid {
                    problems.push(
                        Problem::new(
                            FieldPath::key("repo"),
                            format!("`{repo}` is not a hub repository id"),
                        )
                        .hint("hub ids look like `org/name`"),
                    );
                }
            }
            (None, Some(_)) => {
                if !params.include.is_empty() || !params.exclude.is_empty() {
                    problems.push(Problem::new(
                        FieldPath::key("include"),
                        "`include` and `exclude` apply to hub repositories only",
                    ));
                }
            }
        }
        for (field, patterns) in [("include", &params.include), ("exclude", &params.exclude)] {
            for (i, p) in patterns.iter().enumerate() {
                if let Err(e) = Glob::new(p) {
                    problems.push(Problem::new(
                        FieldPath::key(field).at(i),
                        format!("invalid pattern `{p}`: {}", e.kind()),
                    ));
                }
            }
        }
        problems
    }

    fn pin(&self, params: &DownloadParams, cx: &PinContext<'_>) -> anyhow::Result<Option<Json>> {
        let Some(id) = &params.repo else {
            return Ok(None);
        };
        let repo = HubRepo::new(id, params.repo_type);
        let commit = resolve_commit(&repo, &params.revision, cx.offline)?;
        Ok(Some(json!({
            "repo": id,
            "revision": params.revision,
            "commit": commit,
        })))
    }

    fn run(&self, params: &DownloadParams, cx: &mut StepContext<'_>) -> anyhow::Result<()> {
        if params.path.is_some() {
            let src = cx.input("path")?;
            let dest = match src.file_name() {
                Some(name) if src.is_file() => cx.out_dir().join(name),
                _ => cx.out_dir().to_path_buf(),
            };
            return transfer(src, &dest, Transfer::Copy);
        }
        let id = params.repo.as_deref().expect("checked: repo or path");
        let commit = cx
            .pin()
            .and_then(|p| p.get("commit"))
            .and_then(Json::as_str)
            .context("the download was not pinned")?
            .to_string();
        let repo = HubRepo::new(id, params.repo_type);
        let filter = Filter::new(&params.include, &params.exclude)?;
        let listed = if cx.offline() {
            repo.cached_files(&commit)
        } else {
            match repo.remote_info(&commit) {
                Ok((_, files)) => files,
                Err(e) => {
                    warn!("{e:#}; using the files in the local cache");
                    repo.cached_files(&commit)
                }
            }
        };
        let files: Vec<String> = listed.into_iter().filter(|f| filter.keeps(f)).collect();
        if files.is_empty() {
            anyhow::bail!(
                "no files of `{id}` at {} {}{}",
                &commit[..12],
                if cx.offline() {
                    format!("are in the local cache `{}`", repo.folder().display())
                } else {
                    "match the patterns".to_string()
                },
                if cx.offline() {
                    "\nhint: download it once with network access, or point HF_HUB_CACHE at a cache that has it"
                } else {
                    ""
                }
            );
        }
        let bar = cx.progress().bar(files.len() as u64, "files");
        for file in &files {
            let src = if cx.offline() {
                let p = repo.snapshot(&commit).join(file);
                anyhow::ensure!(
                    p.exists(),
                    "`{file}` of `{id}` is not in the local cache (offline)"
                );
                p
            } else {
                repo.fetch(&commit, file)?
            };
            transfer(&src, &cx.out_dir().join(file), Transfer::Link)?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        if !cx.offline() {
            repo.write_ref(&params.revision, &commit)?;
        }
        cx.metric("files", files.len());
        Ok(())
    }
}

/// Resolves a revision to a commit: a sha is itself; offline, the cache's `refs/`; online, the hub (falling
/// back to the cache, with a warning, when the hub cannot be reached).
fn resolve_commit(repo: &HubRepo, revision: &str, offline: bool) -> anyhow::Result<String> {
    if is_commit(revision) {
        return Ok(revision.to_lowercase());
    }
    if offline {
        return repo.cached_commit(revision).with_context(|| {
            format!(
                "`{}` at `{revision}` is not in the local Hugging Face cache `{}` (offline)\nhint: run once with network access, set HF_HUB_CACHE to a cache that has it, or pin `revision` to a commit sha",
                repo.id,
                repo.cache.display()
            )
        });
    }
    match repo.remote_info(revision) {
        Ok((sha, _)) => Ok(sha),
        Err(e) => match repo.cached_commit(revision) {
            Some(sha) => {
                warn!("{e:#}; using the cached `{revision}` = {}", &sha[..12]);
                Ok(sha)
            }
            None => Err(e.context("and it is not in the local Hugging Face cache either")),
        },
    }
}

/// `include` / `exclude` glob patterns.
struct Filter {
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Filter {
    fn new(include: &[String], exclude: &[String]) -> anyhow::Result<Filter> {
        let set = |patterns: &[String]| -> anyhow::Result<GlobSet> {
            let mut b = GlobSetBuilder::new();
            for p in patterns {
                b.add(Glob::new(p)?);
            }
            Ok(b.build()?)
        };
        Ok(Filter {
            include: if include.is_empty() {
                None
            } else {
                Some(set(include)?)
            },
            exclude: set(exclude)?,
        })
    }

    fn keeps(&self, file: &str) -> bool {
        self.include.as_ref().is_none_or(|s| s.is_match(file)) && !self.exclude.is_match(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_select_files() {
        let f = Filter::new(
            &["*.json".into(), "*.safetensors".into()],
            &["training_args*".into()],
        )
        .unwrap();
        assert!(f.keeps("config.json"));
        assert!(f.keeps("model.safetensors"));
        assert!(!f.keeps("pytorch_model.bin"));
        assert!(!f.keeps("training_args.json"));
    }

    fn fake_cache(dir: &std::path::Path) -> (HubRepo, String) {
        let repo = HubRepo {
            id: "org/tiny".into(),
            kind: lf_schemas::kinds::download::RepoType::Model,
            cache: dir.to_path_buf(),
        };
        let sha = "0123456789abcdef0123456789abcdef01234567".to_string();
        let folder = repo.folder();
        std::fs::create_dir_all(folder.join("blobs")).unwrap();
        std::fs::create_dir_all(folder.join("refs")).unwrap();
        std::fs::create_dir_all(folder.join("snapshots").join(&sha)).unwrap();
        std::fs::write(folder.join("blobs/abc"), b"{}").unwrap();
        std::os::unix::fs::symlink(
            "../../blobs/abc",
            folder.join("snapshots").join(&sha).join("config.json"),
        )
        .unwrap();
        std::fs::write(folder.join("refs/main"), &sha).unwrap();
        (repo, sha)
    }

    #[test]
    fn offline_resolution_reads_refs_like_the_hub_client() {
        let dir = tempfile::tempdir().unwrap();
        let (repo, sha) = fake_cache(dir.path());
        assert_eq!(repo.folder(), dir.path().join("models--org--tiny"));
        assert_eq!(resolve_commit(&repo, "main", true).unwrap(), sha);
        assert_eq!(
            resolve_commit(&repo, &sha.to_uppercase(), true).unwrap(),
            sha
        );
        let err = resolve_commit(&repo, "dev", true).unwrap_err().to_string();
        assert!(err.contains("not in the local Hugging Face cache"), "{err}");
        assert_eq!(repo.cached_files(&sha), vec!["config.json"]);
        // hf-hub's own cache reader agrees on where the file is.
        let cached = hf_hub::Cache::new(dir.path().to_path_buf())
            .model("org/tiny".into())
            .get("config.json")
            .unwrap();
        assert_eq!(cached, repo.snapshot(&sha).join("config.json"));
    }
}
