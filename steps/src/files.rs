//! Copying files into artifacts.

use std::fs;
use std::path::Path;

use anyhow::Context as _;

/// How files get into an artifact.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// Copy bytes: for the user's files, which must stay theirs (an artifact is made read-only, and a hard
    /// link would share that, and later in-place edits, with the user's file).
    Copy,
    /// Hard-link when the filesystem allows, else copy: for immutable caches (Hugging Face blobs).
    Link,
}

/// Puts `src` (a file or a folder tree) at `dest`. Symlinks are followed (the Hugging Face cache's snapshot
/// links become real files in the artifact).
pub fn transfer(src: &Path, dest: &Path, how: Transfer) -> anyhow::Result<()> {
    let meta = fs::metadata(src).with_context(|| format!("cannot read `{}`", src.display()))?;
    if meta.is_dir() {
        fs::create_dir_all(dest)?;
        let mut entries: Vec<_> = fs::read_dir(src)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            transfer(&entry.path(), &dest.join(entry.file_name()), how)?;
        }
        return Ok(());
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    let real = fs::canonicalize(src)?;
    if how == Transfer::Link && fs::hard_link(&real, dest).is_ok() {
        return Ok(());
    }
    fs::copy(&real, dest)
        .with_context(|| format!("cannot copy `{}` to `{}`", src.display(), dest.display()))?;
    Ok(())
}
