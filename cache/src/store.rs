//! The store itself: lookups, staging, atomic commits, locks, verification and garbage collection.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::hash::{Hash, hash_file, hash_tree, hash_tree_with};
use crate::statcache::StatCache;
use crate::{Error, write_atomic};

/// Written into `STORE`; a store with another tag is refused rather than misread.
const LAYOUT: &str = "lf-store-v1";

/// What the store remembers about one finished step: its cache key and the artifact it produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The cache key (blake3 of `key_json`'s canonical form).
    pub key: Hash,
    /// The Merkle hash of the artifact, which is also its folder name under `objects/`.
    pub artifact: Hash,
    /// The step kind that produced it.
    pub kind: String,
    /// The name of the step in the manifest that first produced it (informational).
    pub step: String,
    /// Seconds since the Unix epoch when it was committed.
    pub created_unix_s: u64,
    /// How long the step ran, in seconds.
    pub wall_s: f64,
    /// Headline metrics the step reported (final loss, accuracy...).
    #[serde(default)]
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// Everything that went into the key, for `lf plan -vv` and for explaining why a step re-runs.
    pub key_json: serde_json::Value,
}

/// Facts about a step being committed, besides its output folder.
pub struct NewRecord<'a> {
    /// Step kind.
    pub kind: &'a str,
    /// Step name.
    pub step: &'a str,
    /// Wall time of the step.
    pub wall_s: f64,
    /// Headline metrics.
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// The key's JSON.
    pub key_json: serde_json::Value,
}

/// A content-addressed artifact store rooted at one folder.
pub struct Store {
    root: PathBuf,
    stat: StatCache,
}

/// An exclusive lock on one cache key, released when dropped (or when the process dies).
pub struct KeyLock {
    _file: fs::File,
}

/// A temporary folder a step writes its artifact into. Dropped without a commit, it is deleted.
pub struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    /// The folder to write into.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = remove_tree(&self.path);
        }
    }
}

/// One artifact in the store.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectInfo {
    /// Its hash.
    pub hash: Hash,
    /// Total size of its files.
    pub bytes: u64,
    /// Number of files.
    pub files: u64,
}

/// Result of [`Store::verify`].
#[derive(Default, Debug, Serialize)]
pub struct VerifyReport {
    /// Objects checked.
    pub checked: usize,
    /// Objects whose content no longer matches their name, with the hash found and the files known
    /// to have changed (see [`Health::Damaged`]).
    pub corrupted: Vec<(Hash, Hash, Vec<PathBuf>)>,
    /// Key records whose artifact is missing.
    pub dangling_keys: Vec<Hash>,
    /// Whether corrupted objects and dangling keys were removed.
    pub repaired: bool,
}

/// Result of [`Store::gc`].
#[derive(Default, Debug, Serialize)]
pub struct GcReport {
    /// Objects removed (or that would be, in a dry run).
    pub removed_objects: Vec<ObjectInfo>,
    /// Key records removed.
    pub removed_keys: usize,
    /// Abandoned staging folders removed.
    pub removed_staging: usize,
    /// Scratch folders removed.
    pub removed_scratch: usize,
    /// Bytes freed.
    pub freed_bytes: u64,
    /// Objects kept.
    pub kept_objects: usize,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// What [`Store::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Present, and its files hash to its name.
    Intact,
    /// Not in the store.
    Missing,
    /// Present, but its files hash to `found` (`None`: a file could not be read).
    Damaged {
        /// What the files hash to now.
        found: Option<Hash>,
        /// The files known to have changed (relative to the artifact): those whose content differs
        /// from what the stat cache recorded, or that could not be read. Empty when lf cannot tell
        /// (a file never recorded, or one added).
        files: Vec<PathBuf>,
    },
}

/// ` (changed: a, b)` for a damage report, or nothing when the files are not known.
pub fn describe_damage(files: &[PathBuf]) -> String {
    if files.is_empty() {
        return String::new();
    }
    let names: Vec<String> = files.iter().map(|f| format!("`{}`", f.display())).collect();
    format!(" (changed: {})", names.join(", "))
}

static STAGING_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens the store at `root`, creating it if needed.
    pub fn open(root: &Path) -> Result<Store, Error> {
        let io = |p: &Path, source| Error::Io {
            path: p.to_path_buf(),
            source,
        };
        for sub in ["objects", "keys", "locks", "tmp", "scratch", "runs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        }
        let marker = root.join("STORE");
        match fs::read_to_string(&marker) {
            Ok(tag) if tag.trim() == LAYOUT => {}
            Ok(tag) => {
                return Err(Error::Invalid {
                    path: marker,
                    reason: format!(
                        "store layout `{}` is not `{LAYOUT}`; move the folder away or set LF_STORE",
                        tag.trim()
                    ),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_atomic(&marker, format!("{LAYOUT}\n").as_bytes())?;
            }
            Err(e) => return Err(io(&marker, e)),
        }
        let root = fs::canonicalize(root).map_err(|e| io(root, e))?;
        let stat = StatCache::load(root.join("statcache.json"));
        Ok(Store { root, stat })
    }

    /// The store's folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where an artifact lives (whether or not it exists).
    pub fn object_path(&self, artifact: &Hash) -> PathBuf {
        self.root.join("objects").join(artifact.hex())
    }

    /// The artifact a path is (an object folder, or a `runs/` link to one), if it is in this store.
    pub fn artifact_at(&self, path: &Path) -> Option<Hash> {
        let real = path.canonicalize().ok()?;
        let objects = self.root.join("objects").canonicalize().ok()?;
        if real.parent()? != objects {
            return None;
        }
        real.file_name()?.to_str()?.parse().ok()
    }

    /// Where run records are written.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Remembers a lockfile's location (made absolute) in `lockfiles.json`, so [`Store::lockfiles`] lists
    /// it and `lf cache gc` keeps the artifacts it references.
    pub fn register_lockfile(&self, lock: &Path) -> Result<(), Error> {
        let mut paths: BTreeSet<PathBuf> = self.lockfiles().into_iter().collect();
        let abs = std::path::absolute(lock).unwrap_or_else(|_| lock.to_path_buf());
        if paths.insert(abs) {
            let registry = self.lockfiles_path();
            let bytes = serde_json::to_vec_pretty(&paths).map_err(|e| Error::Invalid {
                path: registry.clone(),
                reason: e.to_string(),
            })?;
            write_atomic(&registry, &bytes)?;
        }
        Ok(())
    }

    /// The lockfiles registered with [`Store::register_lockfile`] (some may have been deleted since); none
    /// if the registry is missing or unreadable.
    pub fn lockfiles(&self) -> Vec<PathBuf> {
        fs::read(self.lockfiles_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn lockfiles_path(&self) -> PathBuf {
        self.root.join("lockfiles.json")
    }

    /// The durable scratch folder of a key (created on demand). It survives kills and failures, so a step
    /// can keep checkpoints there and resume; it is removed when the key's artifact is committed.
    pub fn scratch_dir(&self, key: &Hash) -> Result<PathBuf, Error> {
        let dir = self.root.join("scratch").join(key.hex());
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    fn key_path(&self, key: &Hash) -> PathBuf {
        self.root.join("keys").join(format!("{}.json", key.hex()))
    }

    /// Returns the record of a key whose artifact is present and intact (see [`Store::check`]), or
    /// `None`: a damaged artifact is never reported cached, so its step runs again.
    pub fn lookup(&self, key: &Hash) -> Result<Option<KeyRecord>, Error> {
        let path = self.key_path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(Error::Io { path, source }),
        };
        let record: KeyRecord = serde_json::from_slice(&bytes).map_err(|e| Error::Invalid {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        match self.check(&record.artifact)? {
            Health::Intact => Ok(Some(record)),
            Health::Missing => Ok(None),
            Health::Damaged { files, .. } => {
                tracing::warn!(
                    "artifact {} of step `{}` is damaged{}; the step runs again",
                    record.artifact.short(),
                    record.step,
                    describe_damage(&files)
                );
                Ok(None)
            }
        }
    }

    /// Whether the artifact `hash` is present and its files still hash to its name. Files whose stat
    /// data (size, mtime, ctime, inode) match the stat cache are not read again, so checking an
    /// unchanged artifact costs a directory walk; a changed file (edited, truncated, replaced, or a
    /// hard link whose count changed) is re-hashed. Damage to a file that several artifacts share
    /// through hard links shows in each of them.
    pub fn check(&self, hash: &Hash) -> Result<Health, Error> {
        let path = self.object_path(hash);
        if !path.is_dir() && !path.is_file() {
            return Ok(Health::Missing);
        }
        let (result, files) = self.hash_noting_changes(&path, &|p| self.stat.hash_file(p));
        let found = match result {
            Ok(found) if found == *hash => return Ok(Health::Intact),
            Ok(found) => Some(found),
            // A file that vanished or became unreadable mid-walk is damage, not a failed run.
            Err(Error::Io { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Health::Damaged { found, files })
    }

    /// Hashes the artifact at `path`, reading each file through `read`, and lists the files known to
    /// have changed (relative to `path`, sorted): those whose content differs from what the stat cache
    /// recorded before this read, and the file the walk failed on, if it failed on one.
    fn hash_noting_changes(
        &self,
        path: &Path,
        read: &(dyn Fn(&Path) -> Result<Hash, Error> + Sync),
    ) -> (Result<Hash, Error>, Vec<PathBuf>) {
        let changed = std::sync::Mutex::new(Vec::new());
        let result = hash_tree_with(path, true, &|p: &Path| {
            let recorded = self.stat.recorded(p);
            let now = read(p)?;
            if recorded.is_some_and(|r| r != now) {
                changed.lock().unwrap().push(p.to_path_buf());
            }
            Ok(now)
        });
        let mut files = changed.into_inner().unwrap();
        if let Err(Error::Io { path: bad, .. }) = &result {
            files.push(bad.clone());
        }
        let mut files: Vec<PathBuf> = files
            .into_iter()
            .map(|p| p.strip_prefix(path).map(Path::to_path_buf).unwrap_or(p))
            .collect();
        files.sort();
        (result, files)
    }

    /// Reads a key record even if its artifact is gone (to explain what changed since).
    pub fn record(&self, key: &Hash) -> Option<KeyRecord> {
        let bytes = fs::read(self.key_path(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Takes the exclusive lock of a key, calling `on_wait` first if another process holds it.
    pub fn lock(&self, key: &Hash, on_wait: impl FnOnce()) -> Result<KeyLock, Error> {
        let path = self.root.join("locks").join(format!("{}.lock", key.hex()));
        let io = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(io)?;
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(KeyLock { _file: file })
    }

    /// Creates a staging folder for a key. Hold the key's lock while using it.
    pub fn stage(&self, key: &Hash) -> Result<Staging, Error> {
        let name = format!(
            "{}-{}-{}",
            key.short(),
            std::process::id(),
            STAGING_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let path = self.root.join("tmp").join(name);
        fs::create_dir_all(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    /// Hashes a staged artifact, moves it into `objects/` and records the key, in that order.
    pub fn commit(
        &self,
        mut staging: Staging,
        key: &Hash,
        new: NewRecord<'_>,
    ) -> Result<KeyRecord, Error> {
        sync_tree(&staging.path)?;
        let artifact = hash_tree(&staging.path)?;
        let dest = self.object_path(&artifact);
        if dest.exists() && matches!(self.check(&artifact)?, Health::Damaged { .. }) {
            // The same content is stored, but damaged: the new copy replaces it.
            remove_tree(&dest)?;
        }
        if dest.exists() {
            // Same content already stored (another key produced it): keep the existing object.
            remove_tree(&staging.path)?;
        } else {
            fs::rename(&staging.path, &dest).map_err(|source| Error::Io {
                path: dest.clone(),
                source,
            })?;
            sync_dir(&self.root.join("objects"));
            set_read_only(&dest)?;
        }
        staging.committed = true;
        let record = KeyRecord {
            key: *key,
            artifact,
            kind: new.kind.to_string(),
            step: new.step.to_string(),
            created_unix_s: now_unix(),
            wall_s: new.wall_s,
            metrics: new.metrics,
            key_json: new.key_json,
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("key record serializes");
        write_atomic(&self.key_path(key), &bytes)?;
        let scratch = self.root.join("scratch").join(key.hex());
        if scratch.exists() {
            remove_tree(&scratch)?;
        }
        Ok(record)
    }

    /// Hashes a local input file or folder, reusing the stat cache for unchanged files.
    pub fn hash_input(&self, path: &Path) -> Result<Hash, Error> {
        hash_tree_with(path, false, &|p| self.stat.hash_file(p))
    }

    /// Saves the stat cache if it changed.
    pub fn save_stat_cache(&self) -> Result<(), Error> {
        self.stat.save()
    }

    /// All key records, sorted by creation time.
    pub fn records(&self) -> Result<Vec<KeyRecord>, Error> {
        let dir = self.root.join("keys");
        let mut out = Vec::new();
        for entry in read_dir(&dir)? {
            if entry.extension().is_some_and(|e| e == "json")
                && let Ok(bytes) = fs::read(&entry)
                && let Ok(record) = serde_json::from_slice::<KeyRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by_key(|r| (r.created_unix_s, r.key));
        Ok(out)
    }

    /// All artifacts with their sizes.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>, Error> {
        let mut out = Vec::new();
        for path in read_dir(&self.root.join("objects"))? {
            let Some(hash) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.parse::<Hash>().ok())
            else {
                continue;
            };
            let (bytes, files) = tree_size(&path);
            out.push(ObjectInfo { hash, bytes, files });
        }
        out.sort_by_key(|o| o.hash);
        Ok(out)
    }

    /// Re-hashes every artifact and reports those whose content changed; with `repair`, removes them and
    /// the key records that point at missing artifacts, so the steps run again next time.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, Error> {
        let mut report = VerifyReport {
            repaired: repair,
            ..Default::default()
        };
        for object in self.objects()? {
            report.checked += 1;
            let path = self.object_path(&object.hash);
            // Every file is read again (no trust in stat data).
            let (found, changed) = self.hash_noting_changes(&path, &hash_file);
            let found = found?;
            if found != object.hash {
                report.corrupted.push((object.hash, found, changed));
                if repair {
                    remove_tree(&path)?;
                }
            }
        }
        for record in self.records()? {
            if !self.object_path(&record.artifact).exists() {
                report.dangling_keys.push(record.key);
                if repair {
                    remove_file(&self.key_path(&record.key))?;
                }
            }
        }
        if repair {
            self.stat.prune();
            self.stat.save()?;
        }
        Ok(report)
    }

    /// The staging folders no running process owns (left by a killed or crashed run). A staging folder
    /// is abandoned when no process holds the lock of its key; its name starts with the key's short
    /// form, so every lock that matches is tried.
    fn abandoned_staging(&self) -> Result<Vec<PathBuf>, Error> {
        let locks = read_dir(&self.root.join("locks"))?;
        let mut out = Vec::new();
        for dir in read_dir(&self.root.join("tmp"))? {
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let short = name.split('-').next().unwrap_or_default();
            let busy = locks.iter().any(|lock| {
                lock.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(short) && is_locked(lock))
            });
            if !busy {
                out.push(dir);
            }
        }
        Ok(out)
    }

    /// Removes the staging folders of dead processes (what [`Store::gc`] also does), returning how many
    /// and their bytes. `lf run` calls it before it starts, so a killed export does not leak its
    /// half-written gigabytes until someone runs `lf cache gc`.
    pub fn sweep_staging(&self) -> Result<(usize, u64), Error> {
        let mut removed = (0, 0);
        for dir in self.abandoned_staging()? {
            let bytes = tree_size(&dir).0;
            // Another process may have swept it a moment ago.
            if dir.exists() {
                remove_tree(&dir)?;
                removed.0 += 1;
                removed.1 += bytes;
            }
        }
        Ok(removed)
    }

    /// Removes every artifact not in `keep`, the key records that pointed at them, and abandoned staging
    /// folders; with `scratch`, also the scratch folders of keys nobody is running.
    pub fn gc(
        &self,
        keep: &HashSet<Hash>,
        scratch: bool,
        dry_run: bool,
    ) -> Result<GcReport, Error> {
        let mut report = GcReport {
            dry_run,
            ..Default::default()
        };
        let mut removed = HashSet::new();
        for object in self.objects()? {
            if keep.contains(&object.hash) {
                report.kept_objects += 1;
                continue;
            }
            if !dry_run {
                remove_tree(&self.object_path(&object.hash))?;
            }
            report.freed_bytes += object.bytes;
            removed.insert(object.hash);
            report.removed_objects.push(object);
        }
        for record in self.records()? {
            if removed.contains(&record.artifact) || !self.object_path(&record.artifact).exists() {
                report.removed_keys += 1;
                if !dry_run {
                    remove_file(&self.key_path(&record.key))?;
                }
            }
        }
        for dir in self.abandoned_staging()? {
            report.removed_staging += 1;
            report.freed_bytes += tree_size(&dir).0;
            if !dry_run {
                remove_tree(&dir)?;
            }
        }
        if scratch {
            for dir in read_dir(&self.root.join("scratch"))? {
                let lock = self.root.join("locks").join(format!(
                    "{}.lock",
                    dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()
                ));
                if !is_locked(&lock) {
                    report.removed_scratch += 1;
                    report.freed_bytes += tree_size(&dir).0;
                    if !dry_run {
                        remove_tree(&dir)?;
                    }
                }
            }
        }
        if !dry_run {
            self.stat.prune();
            self.stat.save()?;
        }
        Ok(report)
    }
}

fn is_locked(lock: &Path) -> bool {
    let Ok(file) = fs::OpenOptions::new().write(true).open(lock) else {
        return false;
    };
    matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock))
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

fn tree_size(path: &Path) -> (u64, u64) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if !meta.is_dir() {
        return (meta.len(), 1);
    }
    let mut total = (0, 0);
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            let (b, f) = tree_size(&entry.path());
            total.0 += b;
            total.1 += f;
        }
    }
    total
}

fn sync_tree(path: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        for entry in read_dir(path)? {
            sync_tree(&entry)?;
        }
        sync_dir(path);
    } else if meta.is_file() {
        fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
    }
    Ok(())
}

fn sync_dir(path: &Path) {
    // Directory fsync is best effort: not every platform or filesystem supports it.
    if let Ok(dir) = fs::File::open(path) {
        let _ = dir.sync_all();
    }
}

fn set_read_only(path: &Path) -> Result<(), Error> {
    set_mode(path, false)
}

fn set_mode(path: &Path, writable: bool) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io)?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    if meta.is_dir() && writable {
        set_permissions(path, &meta, true).map_err(io)?;
    }
    if meta.is_dir() {
        for entry in read_dir(path)? {
            set_mode(&entry, writable)?;
        }
    }
    if !(meta.is_dir() && writable) {
        set_permissions(path, &meta, writable).map_err(io)?;
    }
    Ok(())
}

#[cfg(unix)]
fn set_permissions(path: &Path, meta: &fs::Metadata, writable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode();
    let mode = if writable {
        mode | 0o200
    } else {
        mode & !0o222
    };
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_permissions(path: &Path, meta: &fs::Metadata, writable: bool) -> std::io::Result<()> {
    let mut perms = meta.permissions();
    perms.set_readonly(!writable);
    fs::set_permissions(path, perms)
}

/// Removes a file or folder tree, making read-only objects writable first.
fn remove_tree(path: &Path) -> Result<(), Error> {
    if !path.exists() {
        return Ok(());
    }
    set_mode(path, true)?;
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn remove_file(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::backdate;

    fn record<'a>(step: &'a str) -> NewRecord<'a> {
        NewRecord {
            kind: "test",
            step,
            wall_s: 0.0,
            metrics: BTreeMap::new(),
            key_json: serde_json::json!({"step": step}),
        }
    }

    fn commit_bytes(store: &Store, key: &Hash, bytes: &[u8]) -> KeyRecord {
        let _lock = store.lock(key, || {}).unwrap();
        let staging = store.stage(key).unwrap();
        fs::write(staging.path().join("out.txt"), bytes).unwrap();
        store.commit(staging, key, record("s")).unwrap()
    }

    #[test]
    fn registered_lockfiles_are_listed_once_with_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store")).unwrap();
        assert!(store.lockfiles().is_empty());
        let a = dir.path().join("a.lock");
        let b = dir.path().join("sub").join("b.lock");
        store.register_lockfile(&b).unwrap();
        store.register_lockfile(&a).unwrap();
        store.register_lockfile(&a).unwrap();
        assert_eq!(store.lockfiles(), [a.clone(), b]);
        // A relative path is recorded as the absolute path it names now.
        store.register_lockfile(Path::new("rel.lock")).unwrap();
        let rel = std::env::current_dir().unwrap().join("rel.lock");
        assert!(store.lockfiles().contains(&rel));
        // An unreadable registry lists nothing and is rewritten by the next registration.
        fs::write(store.root().join("lockfiles.json"), "not json").unwrap();
        assert!(store.lockfiles().is_empty());
        store.register_lockfile(&a).unwrap();
        assert_eq!(store.lockfiles(), [a]);
    }

    /// Makes `path` writable again (committed artifacts are read-only), as an editor run by root would.
    fn writable(path: &Path) {
        let mut perms = fs::metadata(path).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        fs::set_permissions(path, perms).unwrap();
    }

    #[test]
    fn a_damaged_artifact_is_not_reported_cached_and_is_replaced_by_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"k");
        let rec = commit_bytes(&store, &key, b"weights");
        assert_eq!(store.check(&rec.artifact).unwrap(), Health::Intact);
        let file = store.object_path(&rec.artifact).join("out.txt");
        writable(&file);
        // An old file, so that the stat cache records it.
        backdate(&file);
        assert_eq!(store.check(&rec.artifact).unwrap(), Health::Intact);
        fs::write(&file, b"weightz").unwrap();
        // The stat cache knew the file's content, so the report names it.
        assert!(matches!(
            store.check(&rec.artifact).unwrap(),
            Health::Damaged { found: Some(_), files } if files == [PathBuf::from("out.txt")]
        ));
        assert!(store.lookup(&key).unwrap().is_none());
        // The step runs again and commits the same content: the damaged copy is replaced.
        let again = commit_bytes(&store, &key, b"weights");
        assert_eq!(again.artifact, rec.artifact);
        assert_eq!(fs::read(&file).unwrap(), b"weights");
        assert!(store.lookup(&key).unwrap().is_some());
        // A deleted file is damage too.
        writable(&store.object_path(&rec.artifact));
        fs::remove_file(&file).unwrap();
        assert!(store.lookup(&key).unwrap().is_none());
        assert_eq!(
            store.check(&Hash::of_bytes(b"none")).unwrap(),
            Health::Missing
        );
    }

    #[test]
    fn damage_to_a_hard_linked_file_shows_in_every_artifact_that_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = commit_bytes(&store, &Hash::of_bytes(b"a"), b"tokenizer");
        let shared = store.object_path(&first.artifact).join("out.txt");
        // A second artifact holds the same file through a hard link (as training links its base).
        let key_b = Hash::of_bytes(b"b");
        let second = {
            let _lock = store.lock(&key_b, || {}).unwrap();
            let staging = store.stage(&key_b).unwrap();
            fs::hard_link(&shared, staging.path().join("tokenizer.json")).unwrap();
            fs::write(staging.path().join("weights"), b"w").unwrap();
            store.commit(staging, &key_b, record("b")).unwrap()
        };
        assert!(store.lookup(&key_b).unwrap().is_some());
        // Truncating it through one artifact damages both, and both are found damaged.
        writable(&shared);
        fs::OpenOptions::new()
            .write(true)
            .open(&shared)
            .unwrap()
            .set_len(3)
            .unwrap();
        for (key, rec) in [(Hash::of_bytes(b"a"), &first), (key_b, &second)] {
            assert!(matches!(
                store.check(&rec.artifact).unwrap(),
                Health::Damaged { .. }
            ));
            assert!(store.lookup(&key).unwrap().is_none());
        }
    }

    #[test]
    fn commit_then_lookup_finds_read_only_artifact() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"key");
        assert!(store.lookup(&key).unwrap().is_none());
        let rec = commit_bytes(&store, &key, b"hello");
        let found = store.lookup(&key).unwrap().unwrap();
        assert_eq!(found.artifact, rec.artifact);
        let file = store.object_path(&rec.artifact).join("out.txt");
        assert_eq!(fs::read(&file).unwrap(), b"hello");
        assert!(fs::metadata(&file).unwrap().permissions().readonly());
        assert_eq!(read_dir(&dir.path().join("tmp")).unwrap().len(), 0);
    }

    #[test]
    fn dropped_staging_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"k");
        {
            let staging = store.stage(&key).unwrap();
            fs::write(staging.path().join("partial"), b"half").unwrap();
        }
        assert!(read_dir(&dir.path().join("tmp")).unwrap().is_empty());
        assert!(store.lookup(&key).unwrap().is_none());
    }

    #[test]
    fn identical_outputs_share_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = commit_bytes(&store, &Hash::of_bytes(b"a"), b"same");
        let b = commit_bytes(&store, &Hash::of_bytes(b"b"), b"same");
        assert_eq!(a.artifact, b.artifact);
        assert_eq!(store.objects().unwrap().len(), 1);
    }

    #[test]
    fn verify_detects_and_repairs_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"k");
        let rec = commit_bytes(&store, &key, b"good");
        let file = store.object_path(&rec.artifact).join("out.txt");
        set_mode(&store.object_path(&rec.artifact), true).unwrap();
        // An old file, which the stat cache records when the artifact is checked.
        backdate(&file);
        assert_eq!(store.check(&rec.artifact).unwrap(), Health::Intact);
        fs::write(&file, b"evil").unwrap();
        let report = store.verify(false).unwrap();
        assert_eq!(report.corrupted.len(), 1);
        assert_eq!(report.corrupted[0].0, rec.artifact);
        assert_eq!(report.corrupted[0].2, [PathBuf::from("out.txt")]);
        let report = store.verify(true).unwrap();
        assert_eq!(report.corrupted.len(), 1);
        assert_eq!(report.dangling_keys, vec![key]);
        assert!(store.lookup(&key).unwrap().is_none());
        assert!(store.verify(false).unwrap().corrupted.is_empty());
    }

    #[test]
    fn gc_keeps_only_what_is_asked_and_dry_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let keep = commit_bytes(&store, &Hash::of_bytes(b"1"), b"keep");
        let drop_ = commit_bytes(&store, &Hash::of_bytes(b"2"), b"drop");
        let keep_set: HashSet<Hash> = [keep.artifact].into();
        let dry = store.gc(&keep_set, false, true).unwrap();
        assert_eq!(dry.removed_objects.len(), 1);
        assert_eq!(store.objects().unwrap().len(), 2);
        let real = store.gc(&keep_set, false, false).unwrap();
        assert_eq!(real.removed_objects[0].hash, drop_.artifact);
        assert_eq!(real.removed_keys, 1);
        assert_eq!(store.objects().unwrap().len(), 1);
        assert!(store.lookup(&Hash::of_bytes(b"1")).unwrap().is_some());
        assert!(store.lookup(&Hash::of_bytes(b"2")).unwrap().is_none());
    }

    #[test]
    fn gc_removes_abandoned_staging_but_not_a_busy_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let busy_key = Hash::of_bytes(b"busy");
        let _lock = store.lock(&busy_key, || {}).unwrap();
        let busy = store.stage(&busy_key).unwrap();
        // An abandoned one: staged, then the process "died" (we forget the guard).
        let dead_key = Hash::of_bytes(b"dead");
        {
            let _l = store.lock(&dead_key, || {}).unwrap();
            std::mem::forget(store.stage(&dead_key).unwrap());
        }
        let report = store.gc(&HashSet::new(), false, false).unwrap();
        assert_eq!(report.removed_staging, 1);
        assert!(busy.path().exists());
    }

    #[test]
    fn sweeping_removes_staging_of_dead_runs_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let busy_key = Hash::of_bytes(b"busy");
        let _lock = store.lock(&busy_key, || {}).unwrap();
        let busy = store.stage(&busy_key).unwrap();
        fs::write(busy.path().join("half"), b"written").unwrap();
        let dead_key = Hash::of_bytes(b"dead");
        let dead_path = {
            let _l = store.lock(&dead_key, || {}).unwrap();
            let staging = store.stage(&dead_key).unwrap();
            fs::write(staging.path().join("weights"), vec![0u8; 4096]).unwrap();
            let path = staging.path().to_path_buf();
            std::mem::forget(staging);
            path
        };
        assert_eq!(store.sweep_staging().unwrap(), (1, 4096));
        assert!(!dead_path.exists());
        assert!(busy.path().join("half").exists());
        assert_eq!(store.sweep_staging().unwrap(), (0, 0));
    }

    #[test]
    fn scratch_survives_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"k");
        let scratch = store.scratch_dir(&key).unwrap();
        fs::write(scratch.join("ckpt"), b"step 3").unwrap();
        assert!(scratch.join("ckpt").exists());
        commit_bytes(&store, &key, b"done");
        assert!(!scratch.exists());
    }

    #[test]
    fn a_second_locker_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = Hash::of_bytes(b"k");
        let first = store.lock(&key, || {}).unwrap();
        let waited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = waited.clone();
        let root = dir.path().to_path_buf();
        let handle = std::thread::spawn(move || {
            let store = Store::open(&root).unwrap();
            let _second = store
                .lock(&key, || w.store(true, Ordering::SeqCst))
                .unwrap();
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(first);
        handle.join().unwrap();
        assert!(waited.load(Ordering::SeqCst));
    }

    #[test]
    fn foreign_layout_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("STORE"), "lf-store-v0\n").unwrap();
        let err = Store::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("invalid"), "{err}");
    }
}
