//! Remembers the hashes of local input files by their stat data, so unchanged large inputs are not re-read.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, hash_file};
use crate::{Error, write_atomic};

/// What identifies an unchanged file: if any of these differ, the file is hashed again.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    inode: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            Stamp {
                len: meta.len(),
                mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
                ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
                inode: meta.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let mtime_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i128);
            Stamp {
                len: meta.len(),
                mtime_ns,
                ctime_ns: 0,
                inode: 0,
            }
        }
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct Entry {
    stamp: Stamp,
    hash: Hash,
}

/// A persistent map from file path and stat data to content hash.
pub struct StatCache {
    path: PathBuf,
    entries: Mutex<BTreeMap<PathBuf, Entry>>,
    dirty: Mutex<bool>,
}

impl StatCache {
    /// Loads the cache stored at `path` (an absent or unreadable file is an empty cache).
    pub fn load(path: PathBuf) -> StatCache {
        let entries = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        StatCache {
            path,
            entries: Mutex::new(entries),
            dirty: Mutex::new(false),
        }
    }

    /// Returns the content hash of a file, reading it only when its stat data changed.
    ///
    /// A file modified within the same timestamp tick as the recorded stamp would be missed, so entries whose
    /// modification time is within two seconds of now are never trusted.
    pub fn hash_file(&self, path: &Path) -> Result<Hash, Error> {
        let meta = fs::metadata(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stamp = Stamp::of(&meta);
        let key = path.to_path_buf();
        if let Some(entry) = self.entries.lock().unwrap().get(&key)
            && entry.stamp == stamp
        {
            return Ok(entry.hash);
        }
        let hash = hash_file(path)?;
        if !recently_modified(&meta) {
            self.entries
                .lock()
                .unwrap()
                .insert(key, Entry { stamp, hash });
            *self.dirty.lock().unwrap() = true;
        }
        Ok(hash)
    }

    /// Forgets the files that no longer exist (after `gc` or `verify --repair` removed artifacts), so the
    /// cache does not grow with every artifact ever made.
    pub fn prune(&self) -> usize {
        let mut entries = self.entries.lock().unwrap();
        let before = entries.len();
        entries.retain(|path, _| path.exists());
        let removed = before - entries.len();
        if removed > 0 {
            *self.dirty.lock().unwrap() = true;
        }
        removed
    }

    /// The hash recorded for `path`, whatever its stat data is now.
    pub fn recorded(&self, path: &Path) -> Option<Hash> {
        self.entries.lock().unwrap().get(path).map(|e| e.hash)
    }

    /// Writes the cache back if it changed.
    pub fn save(&self) -> Result<(), Error> {
        let mut dirty = self.dirty.lock().unwrap();
        if !*dirty {
            return Ok(());
        }
        let entries = self.entries.lock().unwrap();
        let bytes = serde_json::to_vec(&*entries).expect("stat cache serializes");
        write_atomic(&self.path, &bytes)?;
        *dirty = false;
        Ok(())
    }
}

fn recently_modified(meta: &fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|m| std::time::SystemTime::now().duration_since(m).ok())
        .is_none_or(|age| age.as_secs() < 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::backdate;

    #[test]
    fn unchanged_file_hits_and_rewritten_file_misses() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data.jsonl");
        fs::write(&file, b"one").unwrap();
        // Backdate so the entry is trusted.
        backdate(&file);
        let cache = StatCache::load(dir.path().join("stat.json"));
        let h1 = cache.hash_file(&file).unwrap();
        cache.save().unwrap();

        let reloaded = StatCache::load(dir.path().join("stat.json"));
        assert_eq!(reloaded.entries.lock().unwrap().len(), 1);
        assert_eq!(reloaded.hash_file(&file).unwrap(), h1);

        fs::write(&file, b"two").unwrap();
        let h2 = reloaded.hash_file(&file).unwrap();
        assert_ne!(h1, h2);
        assert_eq!(h2, Hash::of_bytes(b"two"));
    }

    #[test]
    fn fresh_files_are_hashed_but_not_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("new.txt");
        fs::write(&file, b"x").unwrap();
        let cache = StatCache::load(dir.path().join("stat.json"));
        assert_eq!(cache.hash_file(&file).unwrap(), Hash::of_bytes(b"x"));
        assert!(cache.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn pruning_forgets_removed_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = StatCache::load(dir.path().join("stat.json"));
        for name in ["kept", "removed"] {
            let file = dir.path().join(name);
            fs::write(&file, name).unwrap();
            backdate(&file);
            cache.hash_file(&file).unwrap();
        }
        fs::remove_file(dir.path().join("removed")).unwrap();
        assert_eq!(cache.prune(), 1);
        assert_eq!(
            cache.recorded(&dir.path().join("kept")),
            Some(Hash::of_bytes(b"kept"))
        );
        assert_eq!(cache.recorded(&dir.path().join("removed")), None);
        cache.save().unwrap();
        assert_eq!(
            StatCache::load(dir.path().join("stat.json"))
                .entries
                .lock()
                .unwrap()
                .len(),
            1
        );
    }
}
