//! Rendering `{{ placeholders }}` in a dataset's rows with fixed variables (the `template` kind's
//! library): [`Renderer`], and the check of a `source` naming a built-in data set.

use std::collections::BTreeMap;
use std::path::Path;

use lf_engine::Problem;
use lf_schemas::FieldPath;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value as Json;

use crate::data::builtin;
use crate::data::error::{DataError, Origin, Pos, list};
use crate::data::files::{DataFile, FileKind, read_rows};

/// A problem with a `source` that names an unknown built-in.
pub fn check_source(field: FieldPath, source: &str) -> Option<Problem> {
    if builtin::is_builtin(source) && builtin::lookup(source).is_none() {
        return Some(
            Problem::new(field, format!("there is no built-in data set `{source}`"))
                .hint(format!("built-in sets are {}", list(builtin::names()))),
        );
    }
    None
}

/// Renders strings of rows with fixed variables; undefined variables are errors.
pub struct Renderer {
    env: Environment<'static>,
    vars: BTreeMap<String, Json>,
}

impl Renderer {
    /// A renderer with `vars`.
    pub fn new(vars: &BTreeMap<String, Json>) -> Renderer {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        Renderer {
            env,
            vars: vars.clone(),
        }
    }

    /// Renders one template string found at `at`.
    pub fn render_str(&self, text: &str, at: &Origin) -> Result<String, DataError> {
        let template = self.env.template_from_str(text).map_err(|e| {
            let at = match (at.pos, e.line()) {
                (Pos::File, Some(l)) => Origin {
                    pos: Pos::Line(l),
                    ..at.clone()
                },
                _ => at.clone(),
            };
            DataError::row(&at, format!("invalid template: {}", describe(&e)))
        })?;
        let mut undefined: Vec<String> = template
            .undeclared_variables(false)
            .into_iter()
            .filter(|v| !self.vars.contains_key(v) && !self.env.globals().any(|(g, _)| g == v))
            .collect();
        undefined.sort();
        if let Some(variable) = undefined.into_iter().next() {
            let at = match at.pos {
                Pos::File => Origin {
                    pos: line_of(text, &variable).map_or(Pos::File, Pos::Line),
                    ..at.clone()
                },
                _ => at.clone(),
            };
            return Err(DataError::Undefined {
                at,
                variable,
                defined: if self.vars.is_empty() {
                    "none (set `vars`)".to_string()
                } else {
                    list(self.vars.keys())
                },
            });
        }
        template
            .render(&self.vars)
            .map_err(|e| DataError::row(at, format!("cannot render: {}", describe(&e))))
    }

    /// Renders every template string in `value`; returns how many there were.
    pub fn render_value(&self, value: &mut Json, at: &Origin) -> Result<usize, DataError> {
        match value {
            Json::String(s) if is_template(s) => {
                *s = self.render_str(s, at)?;
                Ok(1)
            }
            Json::Array(items) => items.iter_mut().map(|v| self.render_value(v, at)).sum(),
            Json::Object(map) => map.values_mut().map(|v| self.render_value(v, at)).sum(),
            _ => Ok(0),
        }
    }

    /// Renders a file: its output name, text, row count and rendered strings.
    pub fn render_file(
        &self,
        file: &DataFile,
    ) -> Result<(String, String, usize, usize), DataError> {
        if file.kind == FileKind::Text {
            let text = file.text()?;
            let rows = crate::data::files::documents(&text).len();
            if !is_template(&text) {
                return Ok((file.name.clone(), text.into_owned(), rows, 0));
            }
            let out = self.render_str(&text, &file.origin(Pos::File))?;
            return Ok((file.name.clone(), out, rows, 1));
        }
        let mut rows = read_rows(file)?;
        let mut rendered = 0;
        for row in &mut rows {
            rendered += self.render_value(&mut row.value, &row.origin)?;
        }
        let n = rows.len();
        let values = rows.into_iter().map(|r| r.value);
        let (name, text) = match file.kind {
            FileKind::Json => {
                let all: Vec<Json> = values.collect();
                (
                    file.name.clone(),
                    serde_json::to_string_pretty(&all).expect("JSON serializes") + "\n",
                )
            }
            FileKind::Csv => (file.name.clone(), write_csv(file, values.collect())?),
            // JSONL stays JSONL; Parquet is written as JSONL.
            _ => {
                let mut text = String::new();
                for v in values {
                    text.push_str(&serde_json::to_string(&v).expect("JSON serializes"));
                    text.push('\n');
                }
                let name = match file.kind {
                    FileKind::Parquet => format!(
                        "{}.jsonl",
                        file.name.strip_suffix(".parquet").unwrap_or(&file.name)
                    ),
                    _ => file.name.clone(),
                };
                (name, text)
            }
        };
        Ok((name, text, n, rendered))
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.detail() {
        Some(d) => d.to_string(),
        None => e.kind().to_string(),
    }
}

/// Whether a string has template syntax.
fn is_template(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

fn line_of(text: &str, variable: &str) -> Option<usize> {
    text.lines()
        .position(|l| l.contains("{{") && l.contains(variable))
        .map(|i| i + 1)
}

/// CSV with the source's column order.
fn write_csv(file: &DataFile, rows: Vec<Json>) -> Result<String, DataError> {
    let bytes = file.bytes()?;
    let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[..]);
    let headers: Vec<String> = reader
        .headers()
        .map(|h| h.iter().map(str::to_string).collect())
        .unwrap_or_default();
    let mut w = csv::Writer::from_writer(Vec::new());
    let err =
        |e: csv::Error| DataError::row(&file.origin(Pos::File), format!("cannot write CSV: {e}"));
    w.write_record(&headers).map_err(err)?;
    for row in rows {
        let record: Vec<String> = headers
            .iter()
            .map(|h| match &row[h] {
                Json::String(s) => s.clone(),
                Json::Null => String::new(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&record).map_err(err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| DataError::row(&file.origin(Pos::File), format!("cannot write CSV: {e}")))?;
    Ok(String::from_utf8(bytes).expect("CSV of strings is UTF-8"))
}

/// Path of the single data file of a `template` artifact, for previews.
pub fn data_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .and_then(FileKind::of)
                        .is_some()
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::files::{Several, find};
    use serde_json::json;

    fn vars() -> BTreeMap<String, Json> {
        BTreeMap::from([
            ("name".to_string(), json!("Lumi")),
            ("author".to_string(), json!("the lf authors")),
        ])
    }

    #[test]
    fn builtin_identity_renders_every_placeholder() {
        let files = find("builtin:identity", None, None, Several::Error).unwrap();
        let (name, text, rows, rendered) = Renderer::new(&vars()).render_file(&files[0]).unwrap();
        assert_eq!(name, "identity.json");
        assert_eq!(rows, 134);
        assert!(rendered >= 134);
        assert!(!text.contains("{{"));
        assert!(text.contains("Lumi") && text.contains("the lf authors"));
        let back: Vec<Json> = serde_json::from_str(&text).unwrap();
        assert_eq!(back.len(), 134);
    }

    #[test]
    fn undefined_placeholder_names_row_and_variable() {
        let files = find("builtin:identity", None, None, Several::Error).unwrap();
        let only_name = BTreeMap::from([("name".to_string(), json!("Lumi"))]);
        let e = Renderer::new(&only_name)
            .render_file(&files[0])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`builtin:identity` row "), "{e}");
        assert!(
            e.contains(": `author` is undefined\nhint: defined variables are `name`"),
            "{e}"
        );
    }

    #[test]
    fn jsonl_csv_and_text_keep_their_format() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.jsonl"),
            "{\"q\": \"hi {{ name }}\", \"n\": 3}\n{\"q\": \"plain\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.csv"), "z,a\n{{ name }},x\n").unwrap();
        std::fs::write(dir.path().join("c.txt"), "Hello {{ name }}.\n\nBye.\n").unwrap();
        let r = Renderer::new(&vars());
        let at = Origin {
            file: "x".into(),
            pos: Pos::Row(1),
        };
        assert_eq!(
            r.render_str("{% for i in range(2) %}{{ name.upper() }}{% endfor %}", &at)
                .unwrap(),
            "LUMILUMI"
        );
        for (file, expect) in [
            (
                "a.jsonl",
                "{\"n\":3,\"q\":\"hi Lumi\"}\n{\"q\":\"plain\"}\n",
            ),
            ("b.csv", "z,a\nLumi,x\n"),
            ("c.txt", "Hello Lumi.\n\nBye.\n"),
        ] {
            let f = &find("d", Some(dir.path()), Some(file), Several::Error).unwrap()[0];
            let (_, text, _, _) = r.render_file(f).unwrap();
            assert_eq!(text, expect, "{file}");
        }
        std::fs::write(dir.path().join("d.txt"), "one\n\ntwo {{ who }}\n").unwrap();
        let f = &find("d", Some(dir.path()), Some("d.txt"), Several::Error).unwrap()[0];
        let e = r.render_file(f).unwrap_err().to_string();
        assert!(e.starts_with("`d/d.txt:3`: `who` is undefined"), "{e}");
    }
}
