//! lf's content-addressed artifact store.
//!
//! The principal type in this crate is a [`Store`]: a folder (`.lf/` by default) that holds artifacts as
//! read-only directories named by their content hash, and key records that map a step's cache key to the
//! artifact it produced. A step writes into a [`Staging`] directory; [`Store::commit`] hashes it, moves it
//! into place with one atomic rename, and writes the key record last, so a process killed at any moment
//! never leaves something a later run would mistake for a finished artifact.
//!
//! ```text
//! .lf/
//!   STORE                 layout version ("lf-store-v1"); bump it when anything below changes
//!   objects/<hash>/       artifacts, read-only, named by their Merkle hash (see `hash_tree`)
//!   keys/<key>.json       key records: cache key -> artifact hash, with the key's JSON
//!   locks/<key>.lock      per-key advisory locks held while a step runs
//!   tmp/                  staging directories of running steps
//!   scratch/<key>/        durable per-key scratch space (checkpoints), removed after a commit
//!   runs/                 run records (written by the engine)
//!   statcache.json        stat data -> hash of local input files
//!   lockfiles.json        paths of the lockfiles runs wrote, whose artifacts `gc` keeps
//! ```

mod hash;
mod statcache;
mod store;

/// Helpers the unit tests of several modules share.
#[cfg(test)]
mod test_util {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    /// Sets a file's mtime an hour back, so that the stat cache trusts and records it.
    pub fn backdate(path: &Path) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    }
}

pub use hash::{Hash, VOLATILE_DIRS, hash_file, hash_files, hash_tree, hash_tree_with};
pub use statcache::StatCache;
pub use store::{
    GcReport, Health, KeyLock, KeyRecord, NewRecord, ObjectInfo, Staging, Store, VerifyReport,
    describe_damage,
};

use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the store, each naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("cannot access `{}`", path.display())]
    Io {
        /// The path being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file in the store is not what the store wrote.
    #[error("`{}` is invalid: {reason}", path.display())]
    Invalid {
        /// The offending path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Writes `bytes` to `path` through a temporary sibling and a rename, so readers see the old or the new
/// content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |p: &Path, source| Error::Io {
        path: p.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| io(&tmp, e))?;
    file.sync_all().map_err(|e| io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    Ok(())
}
