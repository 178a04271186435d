//! `lf preview` of `dataset`, `template` and `tokenizer` artifacts: the first rows as the model will
//! see them, with untrained tokens marked.

use std::io::Write;
use std::path::Path;

use serde_json::Value as Json;

use super::artifact::read_info;
use super::files::{FileKind, documents};

/// How text is marked: ANSI colour, or brackets when colour is off (`NO_COLOR`, not a terminal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    /// Use ANSI colour.
    pub color: bool,
}

impl Style {
    /// Colour when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Style {
        use std::io::IsTerminal as _;
        Style {
            color: std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn masked(self, text: &str) -> String {
        if self.color {
            format!("\x1b[2m{text}\x1b[0m")
        } else {
            format!("⟦{text}⟧")
        }
    }

    fn heading(self, text: &str) -> String {
        if self.color {
            format!("\x1b[1m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn legend(self) -> &'static str {
        if self.color {
            "dim = not trained"
        } else {
            "⟦…⟧ = not trained"
        }
    }
}

/// Prints the first `rows` samples of a `dataset` artifact.
pub fn dataset(dir: &Path, rows: usize, style: Style, out: &mut dyn Write) -> anyhow::Result<()> {
    let info = read_info(dir)?;
    let template = info
        .template
        .as_ref()
        .map(|t| format!(" · template {} ({})", t.name, &t.hash[..12]))
        .unwrap_or_default();
    writeln!(
        out,
        "{}",
        style.heading(&format!(
            "dataset · stage {}{template} · cutoff_len {} · tokenizer {} ({})",
            info.stage.name(),
            info.cutoff_len,
            info.tokenizer_origin,
            &info.tokenizer_fingerprint[..12]
        ))
    )?;
    for (name, s) in &info.splits {
        writeln!(
            out,
            "{name}: {} rows ({} samples), {} tokens, {} trained, longest {}",
            s.rows, s.samples, s.tokens, s.trained_tokens, s.longest
        )?;
    }
    if info.dropped.is_empty() {
        writeln!(out, "dropped: none of {} rows", info.rows)?;
    } else {
        writeln!(
            out,
            "dropped: {} of {} rows ({})",
            info.dropped_total(),
            info.rows,
            info.dropped
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )?;
    }
    if info.truncated > 0 {
        writeln!(
            out,
            "truncated: {} rows cut to {} tokens",
            info.truncated, info.cutoff_len
        )?;
    }
    for note in &info.notes {
        writeln!(out, "note: {note}")?;
    }
    let text = std::fs::read_to_string(dir.join("preview.jsonl")).unwrap_or_default();
    let samples: Vec<Json> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (i, sample) in samples.iter().take(rows).enumerate() {
        writeln!(out)?;
        if sample.get("chosen").is_some() {
            for side in ["chosen", "rejected"] {
                show(
                    &sample[side],
                    &format!("sample {} · {side}", i + 1),
                    style,
                    out,
                )?;
            }
        } else if let Some(desirable) = sample.get("desirable").and_then(Json::as_bool) {
            let tag = if desirable {
                "desirable"
            } else {
                "undesirable"
            };
            show(sample, &format!("sample {} · {tag}", i + 1), style, out)?;
        } else {
            show(sample, &format!("sample {}", i + 1), style, out)?;
        }
    }
    if rows > samples.len() && !samples.is_empty() {
        writeln!(
            out,
            "\n(the preview keeps the first {} training samples)",
            samples.len()
        )?;
    }
    Ok(())
}

fn show(sample: &Json, title: &str, style: Style, out: &mut dyn Write) -> anyhow::Result<()> {
    let seq = &sample["sequence"];
    writeln!(
        out,
        "{}",
        style.heading(&format!(
            "── {title} · {} tokens, {} trained ──",
            seq["tokens"], seq["trained"]
        ))
    )?;
    writeln!(out, "{}", sample["text"].as_str().unwrap_or_default())?;
    writeln!(
        out,
        "{}",
        style.heading(&format!("── as tokens ({}) ──", style.legend()))
    )?;
    let mut line = String::new();
    for run in seq["runs"].as_array().into_iter().flatten() {
        let text = run[0].as_str().unwrap_or_default();
        if run[1].as_bool() == Some(true) {
            line.push_str(text);
        } else {
            line.push_str(&style.masked(text));
        }
    }
    writeln!(out, "{line}")?;
    Ok(())
}

/// Prints the first `rows` rows of each data file of a `template` artifact.
pub fn template(dir: &Path, rows: usize, out: &mut dyn Write) -> anyhow::Result<()> {
    let files = crate::data::render::data_files(dir);
    anyhow::ensure!(!files.is_empty(), "the artifact holds no data files");
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let text = std::fs::read_to_string(&path)?;
        writeln!(out, "── {name} ──")?;
        match FileKind::of(&name) {
            Some(FileKind::Text) => {
                let docs = documents(&text);
                for (_, doc) in docs.iter().take(rows) {
                    writeln!(out, "{doc}\n")?;
                }
                writeln!(out, "({} documents)", docs.len())?;
            }
            Some(FileKind::Json) => {
                let all: Vec<Json> = serde_json::from_str(&text).unwrap_or_default();
                for row in all.iter().take(rows) {
                    writeln!(out, "{}", serde_json::to_string_pretty(row)?)?;
                }
                writeln!(out, "({} rows)", all.len())?;
            }
            _ => {
                let lines: Vec<&str> = text.lines().collect();
                for l in lines.iter().take(rows) {
                    writeln!(out, "{l}")?;
                }
                writeln!(out, "({} lines)", lines.len())?;
            }
        }
    }
    Ok(())
}

/// Prints a `tokenizer` artifact: its size, special tokens, and how a sample conversation tokenizes.
pub fn tokenizer(dir: &Path, out: &mut dyn Write) -> anyhow::Result<()> {
    let tok = super::tokenizer::ModelTokenizer::load(dir)?;
    writeln!(
        out,
        "tokenizer · {} tokens · fingerprint {}",
        tok.vocab_size(),
        &tok.fingerprint()?[..12]
    )?;
    let show = |t: &Option<String>, id: Option<u32>| match (t, id) {
        (Some(t), Some(id)) => format!("{t} ({id})"),
        (Some(t), None) => t.clone(),
        (None, _) => "none".to_string(),
    };
    writeln!(
        out,
        "bos {} · eos {} · pad id {}",
        show(&tok.tokens.bos, tok.bos_id),
        show(&tok.tokens.eos, tok.eos_id),
        tok.pad_id
    )?;
    writeln!(out, "special tokens: {}", tok.specials.join(" "))?;
    if let Some(source) = &tok.chat_template {
        let t = super::chat::ChatTemplate::new(source, &tok.tokens, &Default::default())?;
        use super::format::{Message, Role};
        let text = t.render(
            &[
                Message::new(Role::User, "Who are you?"),
                Message::new(Role::Assistant, "I am a small model."),
            ],
            None,
            false,
        )?;
        let enc = tok
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        writeln!(out, "\n{text}")?;
        writeln!(out, "{} tokens: {}", enc.len(), enc.get_tokens().join(" "))?;
    }
    Ok(())
}
