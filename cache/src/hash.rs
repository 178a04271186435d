//! Content hashes of files and directory trees (the Merkle hash that names an artifact).

use std::fmt;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::Error;

/// Files at least this large are hashed through a memory map with blake3's rayon-parallel hasher.
const MMAP_THRESHOLD: u64 = 8 << 20;

/// Top-level folders of an artifact that are not part of its content hash.
///
/// `logs/` holds what depends on the wall clock (throughput, timings, progress); everything else in an
/// artifact must be a function of its cache key.
pub const VOLATILE_DIRS: &[&str] = &["logs"];

/// Version tag mixed into every tree hash; bump it when the tree encoding changes.
const TREE_TAG: &[u8] = b"lf-tree-v1\0";

/// A blake3 digest, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// Hashes a byte string.
    pub fn of_bytes(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// The full hex form.
    pub fn hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// The first 12 hex characters, for people.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.short())
    }
}

impl FromStr for Hash {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        blake3::Hash::from_hex(s)
            .map(|h| Hash(*h.as_bytes()))
            .map_err(|e| format!("invalid hash `{s}`: {e}"))
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Hashes the contents of one file.
pub fn hash_file(path: &Path) -> Result<Hash, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = fs::metadata(path).map_err(io)?.len();
    let mut hasher = blake3::Hasher::new();
    if len >= MMAP_THRESHOLD {
        hasher.update_mmap_rayon(path).map_err(io)?;
    } else {
        let mut file = fs::File::open(path).map_err(io)?;
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf).map_err(io)?;
        hasher.update(&buf);
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

/// Kind of a tree entry, part of the encoding.
#[derive(Clone, Copy)]
enum EntryKind {
    File,
    Executable,
    Dir,
    Symlink,
}

impl EntryKind {
    fn tag(self) -> u8 {
        match self {
            EntryKind::File => b'f',
            EntryKind::Executable => b'x',
            EntryKind::Dir => b'd',
            EntryKind::Symlink => b'l',
        }
    }
}

/// Hashes a file or a directory tree.
///
/// A file hashes to the blake3 of its bytes. A directory hashes to the blake3 of its sorted entries, each
/// encoded as a kind byte, the name, a NUL and the entry's hash. Symlinks hash their target text; the
/// executable bit is part of the hash; timestamps and other permissions are not. At the top level, the
/// folders in [`VOLATILE_DIRS`] are left out.
pub fn hash_tree(root: &Path) -> Result<Hash, Error> {
    hash_tree_with(root, true, &hash_file)
}

/// Hashes a file or directory like [`hash_tree`], reading files through `hash_file` (for example a stat
/// cache), and leaving out [`VOLATILE_DIRS`] only when `skip_volatile`.
pub fn hash_tree_with(
    root: &Path,
    skip_volatile: bool,
    hash_file: &(dyn Fn(&Path) -> Result<Hash, Error> + Sync),
) -> Result<Hash, Error> {
    let meta = fs::metadata(root).map_err(|source| Error::Io {
        path: root.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        hash_dir(root, skip_volatile, hash_file)
    } else {
        hash_file(root)
    }
}

fn hash_dir(
    dir: &Path,
    top: bool,
    hash_file: &(dyn Fn(&Path) -> Result<Hash, Error> + Sync),
) -> Result<Hash, Error> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| Error::Invalid {
                path: dir.join(&name),
                reason: "file name is not valid UTF-8".into(),
            })?;
        if top && VOLATILE_DIRS.contains(&name.as_str()) {
            continue;
        }
        names.push(name);
    }
    names.sort();
    let entries: Vec<(EntryKind, Hash)> = names
        .par_iter()
        .map(|name| {
            let path = dir.join(name);
            let meta = fs::symlink_metadata(&path).map_err(|e| io(&path, e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                let target = fs::read_link(&path).map_err(|e| io(&path, e))?;
                let text = target.to_string_lossy();
                Ok((EntryKind::Symlink, Hash::of_bytes(text.as_bytes())))
            } else if ft.is_dir() {
                Ok((EntryKind::Dir, hash_dir(&path, false, hash_file)?))
            } else {
                let kind = if is_executable(&meta) {
                    EntryKind::Executable
                } else {
                    EntryKind::File
                };
                Ok((kind, hash_file(&path)?))
            }
        })
        .collect::<Result<_, Error>>()?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(TREE_TAG);
    for (name, (kind, hash)) in names.iter().zip(entries) {
        hasher.update(&[kind.tag()]);
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(&hash.0);
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

/// Hashes the files under `root` whose relative path (with `/` separators) `keep` accepts: blake3 over
/// the sorted `(path, content hash)` pairs. Used when a step's cache key depends on part of an input
/// artifact only (the tokenizer files of a model, not its weights).
pub fn hash_files(root: &Path, keep: &(dyn Fn(&str) -> bool + Sync)) -> Result<Hash, Error> {
    let mut files = Vec::new();
    collect_files(root, root, &mut files)?;
    files.retain(|rel| keep(rel));
    files.sort();
    let hashes: Vec<Hash> = files
        .par_iter()
        .map(|rel| hash_file(&root.join(rel)))
        .collect::<Result<_, _>>()?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lf-files-v1\0");
    for (rel, hash) in files.iter().zip(hashes) {
        hasher.update(rel.as_bytes());
        hasher.update(&[0]);
        hasher.update(&hash.0);
    }
    Ok(Hash(*hasher.finalize().as_bytes()))
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    if fs::metadata(dir).map_err(io)?.is_file() {
        if let Some(name) = dir.file_name().and_then(|n| n.to_str()) {
            out.push(name.to_string());
        }
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn same_content_same_hash_regardless_of_creation_order() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        write(a.path(), "x/one.txt", b"1");
        write(a.path(), "two.txt", b"2");
        write(b.path(), "two.txt", b"2");
        write(b.path(), "x/one.txt", b"1");
        assert_eq!(hash_tree(a.path()).unwrap(), hash_tree(b.path()).unwrap());
    }

    #[test]
    fn content_name_and_layout_all_change_the_hash() {
        let base = tempfile::tempdir().unwrap();
        write(base.path(), "a/b.txt", b"hello");
        let h0 = hash_tree(base.path()).unwrap();

        let renamed = tempfile::tempdir().unwrap();
        write(renamed.path(), "a/c.txt", b"hello");
        let moved = tempfile::tempdir().unwrap();
        write(moved.path(), "b.txt", b"hello");
        let edited = tempfile::tempdir().unwrap();
        write(edited.path(), "a/b.txt", b"hellO");
        for other in [&renamed, &moved, &edited] {
            assert_ne!(h0, hash_tree(other.path()).unwrap());
        }
    }

    #[test]
    fn logs_folder_is_not_hashed_at_top_level_only() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "w.bin", b"weights");
        let h0 = hash_tree(a.path()).unwrap();
        write(a.path(), "logs/metrics.jsonl", b"{\"tokens_per_s\": 12.5}");
        assert_eq!(h0, hash_tree(a.path()).unwrap());
        write(a.path(), "sub/logs/x", b"1");
        assert_ne!(h0, hash_tree(a.path()).unwrap());
    }

    #[test]
    fn large_files_hash_like_small_ones() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..(MMAP_THRESHOLD as usize + 4097))
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        write(dir.path(), "big.bin", &bytes);
        let h = hash_file(&dir.path().join("big.bin")).unwrap();
        assert_eq!(h, Hash::of_bytes(&bytes));
    }

    #[test]
    fn file_subsets_ignore_what_is_left_out() {
        let a = tempfile::tempdir().unwrap();
        write(a.path(), "tokenizer.json", b"tok");
        write(a.path(), "model.safetensors", b"w1");
        let tok = |rel: &str| rel.starts_with("tokenizer");
        let h1 = hash_files(a.path(), &tok).unwrap();
        write(a.path(), "model.safetensors", b"w2");
        assert_eq!(h1, hash_files(a.path(), &tok).unwrap());
        write(a.path(), "tokenizer.json", b"tok2");
        assert_ne!(h1, hash_files(a.path(), &tok).unwrap());
    }

    #[test]
    fn hex_round_trips() {
        let h = Hash::of_bytes(b"lf");
        assert_eq!(h.hex().parse::<Hash>().unwrap(), h);
        assert!("zz".parse::<Hash>().is_err());
    }
}
