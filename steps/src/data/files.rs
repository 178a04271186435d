//! Finding a source's data files (a built-in set, a step's artifact, a local file or folder) and
//! reading their rows.

use std::borrow::Cow;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde_json::{Map, Value as Json};

use super::builtin;
use super::error::{DataError, Origin, Pos, list};

/// The format of a data file, from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A JSON array of objects (or JSON Lines in a `.json` file).
    Json,
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// Plain text.
    Text,
}

impl FileKind {
    /// The kind of a file named `name`, if it is a data file.
    pub fn of(name: &str) -> Option<FileKind> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Some(match ext.as_str() {
            "json" => FileKind::Json,
            "jsonl" | "ndjson" => FileKind::Jsonl,
            "csv" => FileKind::Csv,
            "parquet" => FileKind::Parquet,
            "txt" => FileKind::Text,
            _ => return None,
        })
    }
}

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub enum Content {
    /// On disk.
    Path(PathBuf),
    /// Embedded in the binary.
    Static(&'static str),
}

/// One data file of a source.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// The name users know it by, for messages: `builtin:identity`, `data/train.json`, `identity/identity.json`.
    pub label: Arc<str>,
    /// Its path relative to the source's folder (its file name for a single file).
    pub name: String,
    /// Its format.
    pub kind: FileKind,
    /// Its bytes.
    pub content: Content,
}

impl DataFile {
    /// The file's bytes.
    pub fn bytes(&self) -> Result<Cow<'static, [u8]>, DataError> {
        match &self.content {
            Content::Static(s) => Ok(Cow::Borrowed(s.as_bytes())),
            Content::Path(p) => fs::read(p).map(Cow::Owned).map_err(|source| DataError::Io {
                path: p.clone(),
                source,
            }),
        }
    }

    /// The file's text.
    pub fn text(&self) -> Result<Cow<'static, str>, DataError> {
        match self.bytes()? {
            Cow::Borrowed(b) => Ok(Cow::Borrowed(
                std::str::from_utf8(b).expect("embedded files are UTF-8"),
            )),
            Cow::Owned(b) => String::from_utf8(b).map(Cow::Owned).map_err(|e| {
                DataError::row(
                    &self.origin(Pos::File),
                    format!("is not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
                )
            }),
        }
    }

    /// A position in this file.
    pub fn origin(&self, pos: Pos) -> Origin {
        Origin {
            file: self.label.clone(),
            pos,
        }
    }
}

/// What to do when a folder holds several data files and no `file` pattern is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Several {
    /// It is an error (the user must choose).
    Error,
    /// Use them all.
    All,
}

/// The data files of a source: `source` as written in the manifest, `input` the resolved path (none
/// for a built-in), `pattern` the `file` parameter.
pub fn find(
    source: &str,
    input: Option<&Path>,
    pattern: Option<&str>,
    several: Several,
) -> Result<Vec<DataFile>, DataError> {
    if builtin::is_builtin(source) {
        let b = builtin::lookup(source).ok_or_else(|| DataError::Files {
            message: format!("there is no built-in data set `{source}`"),
            hint: Some(format!("built-in sets are {}", list(builtin::names()))),
        })?;
        if pattern.is_some() {
            return Err(DataError::Files {
                message: format!("`file` cannot select inside `{source}`"),
                hint: Some("leave `file` out for built-in data sets".into()),
            });
        }
        return Ok(vec![DataFile {
            label: source.into(),
            name: b.file.to_string(),
            kind: FileKind::of(b.file).expect("built-in files have data extensions"),
            content: Content::Static(b.text),
        }]);
    }
    let root = input.ok_or_else(|| DataError::Files {
        message: format!("`{source}` was not resolved to a step or a path"),
        hint: None,
    })?;
    let source = source.trim_end_matches('/');
    if root.is_file() {
        let name = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if pattern.is_some() {
            return Err(DataError::Files {
                message: format!("`{source}` is a file; `file` selects files inside a folder"),
                hint: Some("leave `file` out".into()),
            });
        }
        let kind = FileKind::of(&name).ok_or_else(|| DataError::Files {
            message: format!("`{source}` is not a data file"),
            hint: Some("data files end in `.json`, `.jsonl`, `.csv`, `.parquet` or `.txt`".into()),
        })?;
        return Ok(vec![DataFile {
            label: source.into(),
            name,
            kind,
            content: Content::Path(root.to_path_buf()),
        }]);
    }
    let mut all = Vec::new();
    walk(root, root, &mut all).map_err(|source| DataError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    all.sort();
    let data: Vec<&String> = all
        .iter()
        .filter(|rel| FileKind::of(rel).is_some() && !is_metadata(rel))
        .collect();
    let chosen: Vec<&String> = match pattern {
        Some(p) => {
            let matcher: GlobMatcher = Glob::new(p)
                .map_err(|e| DataError::Files {
                    message: format!("invalid `file` pattern `{p}`: {}", e.kind()),
                    hint: None,
                })?
                .compile_matcher();
            let hits: Vec<&String> = all.iter().filter(|rel| matcher.is_match(rel)).collect();
            if hits.is_empty() {
                return Err(DataError::Files {
                    message: format!("no file of `{source}` matches `{p}`"),
                    hint: Some(format!("its files are {}", list(short(&all)))),
                });
            }
            for hit in &hits {
                if FileKind::of(hit).is_none() {
                    return Err(DataError::Files {
                        message: format!("`{source}/{hit}` is not a data file"),
                        hint: Some(
                            "data files end in `.json`, `.jsonl`, `.csv`, `.parquet` or `.txt`"
                                .into(),
                        ),
                    });
                }
            }
            hits
        }
        None if data.is_empty() => {
            return Err(DataError::Files {
                message: format!("`{source}` holds no data files"),
                hint: Some(format!(
                    "its files are {}; data files end in `.json`, `.jsonl`, `.csv`, `.parquet` or `.txt`",
                    list(short(&all))
                )),
            });
        }
        None if data.len() > 1 && several == Several::Error => {
            return Err(DataError::Files {
                message: format!("`{source}` holds several data files"),
                hint: Some(format!(
                    "choose with `file` (a path or a glob); they are {}",
                    list(short(
                        &data.iter().map(|s| s.to_string()).collect::<Vec<_>>()
                    ))
                )),
            });
        }
        None => data,
    };
    Ok(chosen
        .into_iter()
        .map(|rel| DataFile {
            label: format!("{source}/{rel}").into(),
            name: rel.clone(),
            kind: FileKind::of(rel).expect("filtered to data files"),
            content: Content::Path(root.join(rel)),
        })
        .collect())
}

/// At most 12 names, then a count.
fn short(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = names.iter().take(12).cloned().collect();
    if names.len() > 12 {
        out.push(format!("{} more", names.len() - 12));
    }
    out
}

/// Files that sit beside data but are not data.
fn is_metadata(rel: &str) -> bool {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    name == "dataset_info.json"
        || name.starts_with("README")
        || name == "info.json"
        || name == "preview.jsonl"
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .expect("walked below root")
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_dir() {
            if rel == "logs" {
                continue;
            }
            walk(root, &path, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

/// One row of a data file.
#[derive(Debug, Clone)]
pub struct Row {
    /// Where it comes from.
    pub origin: Origin,
    /// A JSON object (a JSON, JSONL, CSV or Parquet row), or a string (a text document).
    pub value: Json,
}

/// The rows of a Parquet file, each a JSON object of its columns.
fn read_parquet(file: &DataFile) -> Result<Vec<Row>, DataError> {
    let Content::Path(path) = &file.content else {
        return Err(DataError::row(
            &file.origin(Pos::File),
            "embedded Parquet files are not supported",
        ));
    };
    let rows = super::parquet::read(path).map_err(|e| match e {
        super::parquet::ParquetError::Io(source) => DataError::Io {
            path: path.clone(),
            source,
        },
        super::parquet::ParquetError::Invalid(pos, msg) => DataError::row(&file.origin(pos), msg),
    })?;
    Ok(rows
        .into_iter()
        .enumerate()
        .map(|(i, value)| Row {
            origin: file.origin(Pos::Row(i + 1)),
            value,
        })
        .collect())
}

/// Reads the rows of a file. Text files give one row per document (documents are separated by blank
/// lines).
pub fn read_rows(file: &DataFile) -> Result<Vec<Row>, DataError> {
    match file.kind {
        FileKind::Json => read_json(file),
        FileKind::Jsonl => read_jsonl(file, &file.text()?),
        FileKind::Csv => read_csv(file),
        FileKind::Parquet => read_parquet(file),
        FileKind::Text => Ok(documents(&file.text()?)
            .into_iter()
            .map(|(line, text)| Row {
                origin: file.origin(Pos::Line(line)),
                value: Json::String(text.to_string()),
            })
            .collect()),
    }
}

/// Reads a text file as LLaMA-Factory reads the ones its `dataset_info.json` names (the `datasets`
/// library's `text` builder): one row `{"text": LINE}` per line. Blank lines are left out (there they
/// become empty documents).
pub fn read_text_lines(file: &DataFile) -> Result<Vec<Row>, DataError> {
    Ok(file
        .text()?
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| Row {
            origin: file.origin(Pos::Line(i + 1)),
            value: serde_json::json!({ "text": line }),
        })
        .collect())
}

/// The documents of a text: paragraphs separated by blank lines, each with its first line number.
pub fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (line, byte)
    let mut end = 0;
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let blank = line.trim().is_empty();
        match (blank, start) {
            (false, None) => {
                start = Some((i + 1, offset));
                end = offset + line.len();
            }
            (false, Some(_)) => end = offset + line.len(),
            (true, Some((l, s))) => {
                docs.push((l, text[s..end].trim_end()));
                start = None;
            }
            (true, None) => {}
        }
        offset += line.len();
    }
    if let Some((l, s)) = start {
        docs.push((l, text[s..end].trim_end()));
    }
    docs
}

fn read_json(file: &DataFile) -> Result<Vec<Row>, DataError> {
    let text = file.text()?;
    let value: Json = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e)
            if e.classify() == serde_json::error::Category::Syntax
                && text.trim_start().starts_with('{')
                && e.to_string().starts_with("trailing characters") =>
        {
            // Many hub datasets name their JSON Lines files `.json`.
            return read_jsonl(file, &text);
        }
        Err(e) => {
            return Err(DataError::row(
                &file.origin(Pos::Line(e.line())),
                format!("invalid JSON: {e}"),
            ));
        }
    };
    match value {
        Json::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let origin = file.origin(Pos::Row(i + 1));
                if !v.is_object() {
                    return Err(DataError::row(
                        &origin,
                        format!("is {}, not an object", kind_of(&v)),
                    ));
                }
                Ok(Row { origin, value: v })
            })
            .collect(),
        Json::Object(_) => Ok(vec![Row {
            origin: file.origin(Pos::Row(1)),
            value,
        }]),
        other => Err(DataError::row_hint(
            &file.origin(Pos::File),
            format!("holds {}, not rows", kind_of(&other)),
            "a JSON data file holds an array of objects, or one object per line",
        )),
    }
}

fn read_jsonl(file: &DataFile, text: &str) -> Result<Vec<Row>, DataError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = file.origin(Pos::Line(i + 1));
        let value: Json = serde_json::from_str(line)
            .map_err(|e| DataError::row(&origin, format!("invalid JSON: {e}")))?;
        if !value.is_object() {
            return Err(DataError::row(
                &origin,
                format!("is {}, not an object", kind_of(&value)),
            ));
        }
        rows.push(Row { origin, value });
    }
    Ok(rows)
}

fn read_csv(file: &DataFile) -> Result<Vec<Row>, DataError> {
    let bytes = file.bytes()?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(&bytes[..]);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| DataError::row(&file.origin(Pos::Line(1)), format!("invalid CSV: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map(|p| p.line() as usize).unwrap_or(0);
            DataError::row(&file.origin(Pos::Line(line)), format!("invalid CSV: {e}"))
        })?;
        let line = record.position().map(|p| p.line() as usize).unwrap_or(0);
        let mut map = Map::new();
        for (h, v) in headers.iter().zip(record.iter()) {
            map.insert(h.clone(), Json::String(v.to_string()));
        }
        rows.push(Row {
            origin: file.origin(Pos::Line(line)),
            value: Json::Object(map),
        });
    }
    Ok(rows)
}

/// "a string", "an array", … for messages.
pub fn kind_of(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn documents_are_separated_by_blank_lines() {
        let docs = documents("one\ntwo\n\n\nthree\n  \nfour");
        assert_eq!(docs, vec![(1, "one\ntwo"), (5, "three"), (7, "four")]);
    }

    #[test]
    fn a_folder_with_several_files_needs_a_choice() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.json", "[]");
        write(dir.path(), "b.jsonl", "");
        write(dir.path(), "README.md", "");
        let err = find("data", Some(dir.path()), None, Several::Error).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("several data files"), "{msg}");
        assert!(
            msg.contains("`a.json`") && msg.contains("`b.jsonl`"),
            "{msg}"
        );
        let files = find("data", Some(dir.path()), Some("*.jsonl"), Several::Error).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(&*files[0].label, "data/b.jsonl");
        let all = find("data", Some(dir.path()), None, Several::All).unwrap();
        assert_eq!(all.len(), 2);
    }

    #[test]
    fn malformed_rows_name_file_and_row_or_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "d.jsonl", "{\"a\": 1}\n\n{\"a\": 2\n");
        let f = &find("d.jsonl", Some(&p), None, Several::Error).unwrap()[0];
        let msg = read_rows(f).unwrap_err().to_string();
        assert!(msg.starts_with("`d.jsonl:3`: invalid JSON"), "{msg}");

        let p = write(dir.path(), "d.json", "[{\"a\": 1}, 5]");
        let f = &find("d.json", Some(&p), None, Several::Error).unwrap()[0];
        let msg = read_rows(f).unwrap_err().to_string();
        assert_eq!(msg, "`d.json` row 2: is a number, not an object");

        let p = write(dir.path(), "l.json", "{\"a\": 1}\n{\"a\": 2}\n");
        let f = &find("l.json", Some(&p), None, Several::Error).unwrap()[0];
        assert_eq!(read_rows(f).unwrap().len(), 2);
    }

    #[test]
    fn csv_rows_are_string_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.csv",
            "instruction,output\nhi,\"hello, you\"\nbye,ciao\n",
        );
        let f = &find("d.csv", Some(&p), None, Several::Error).unwrap()[0];
        let rows = read_rows(f).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].value["output"], "hello, you");
        assert_eq!(rows[1].origin.to_string(), "`d.csv:3`");
    }
}
