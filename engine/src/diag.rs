//! Diagnostics that point at the user's file: a message, a span with an excerpt, and a hint.

use std::fmt::Write as _;

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use crate::yaml::Span;

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The manifest cannot run.
    Error,
    /// It can run, but probably not as intended.
    Warning,
}

/// One problem found in a manifest.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, lowercase, names in backticks, no trailing period.
    pub message: String,
    /// The primary place (none for problems of the whole file).
    #[serde(skip)]
    pub span: Option<Span>,
    /// Text under the primary place.
    pub label: Option<String>,
    /// Other places that explain the problem.
    #[serde(skip)]
    pub related: Vec<(Span, String)>,
    /// What to do about it.
    pub hint: Option<String>,
    /// `line:col` of the primary place, filled in when rendered for machines.
    pub location: Option<String>,
}

impl Diagnostic {
    /// An error at `span`.
    pub fn error(message: impl Into<String>, span: Option<Span>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            related: Vec::new(),
            hint: None,
            location: None,
        }
    }

    /// A warning at `span`.
    pub fn warning(message: impl Into<String>, span: Option<Span>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message, span)
        }
    }

    /// Adds a label under the primary span.
    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a hint if there is one.
    pub fn maybe_hint(mut self, hint: Option<String>) -> Diagnostic {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }

    /// Adds a secondary place.
    pub fn related(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.related.push((span, label.into()));
        self
    }
}

/// A source file, for rendering.
pub struct SourceFile<'a> {
    /// The path as the user gave it.
    pub path: &'a str,
    /// Its text.
    pub text: &'a str,
}

impl SourceFile<'_> {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    fn clamp(&self, span: Span) -> std::ops::Range<usize> {
        let mut start = span.start.min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = span.end.clamp(start, self.text.len());
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }
}

/// Renders diagnostics like rustc does, with or without colour.
pub fn render(diags: &[Diagnostic], source: &SourceFile<'_>, color: bool) -> String {
    let renderer = if color {
        Renderer::styled()
    } else {
        Renderer::plain()
    };
    let mut out = String::new();
    for diag in diags {
        let level = match diag.severity {
            Severity::Error => Level::ERROR,
            Severity::Warning => Level::WARNING,
        };
        let mut group = Group::with_title(level.primary_title(diag.message.as_str()));
        if let Some(span) = diag.span {
            let mut primary = AnnotationKind::Primary.span(source.clamp(span));
            if let Some(label) = &diag.label {
                primary = primary.label(label.as_str());
            }
            let mut snippet = Snippet::source(source.text)
                .path(source.path)
                .fold(true)
                .annotation(primary);
            for (span, label) in &diag.related {
                snippet = snippet.annotation(
                    AnnotationKind::Context
                        .span(source.clamp(*span))
                        .label(label.as_str()),
                );
            }
            group = group.element(snippet);
        } else {
            group = group.element(annotate_snippets::Origin::path(source.path));
        }
        if let Some(hint) = &diag.hint {
            group = group.element(Level::HELP.with_name("hint").message(hint.as_str()));
        }
        let _ = writeln!(out, "{}", renderer.render(&[group]));
    }
    out
}

/// Fills in `location` (`path:line:col`) for machine-readable output.
pub fn locate(diags: &mut [Diagnostic], source: &SourceFile<'_>) {
    for diag in diags {
        if let Some(span) = diag.span {
            let (line, col) = source.line_col(span.start);
            diag.location = Some(format!("{}:{line}:{col}", source.path));
        }
    }
}

/// The candidate closest to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    // Close by edit distance (typos, swapped letters) or by Jaro-Winkler (shared prefixes).
    let len = word.chars().count();
    let max_edits = (len / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let edits = strsim::osa_distance(word, c);
            let jw = strsim::jaro_winkler(word, c);
            (edits < len && (edits <= max_edits || jw > 0.85)).then_some((edits, -jw, c))
        })
        .min_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)))
        .map(|(_, _, c)| c)
}

/// `` `a`, `b` and `c` `` for messages.
pub fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let items: Vec<String> = items
        .into_iter()
        .map(|s| format!("`{}`", s.as_ref()))
        .collect();
    match items.len() {
        0 => String::new(),
        1 => items[0].clone(),
        n => format!("{} and {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let src = SourceFile {
            path: "p.yaml",
            text: "a: 1\nb: 한글 x\n",
        };
        let offset = src.text.find('x').unwrap();
        assert_eq!(src.line_col(offset), (2, 7));
        assert_eq!(src.line_col(0), (1, 1));
    }

    #[test]
    fn plain_render_has_path_line_col_excerpt_and_hint() {
        let text = "steps:\n  dpo:\n    model: sft-base\n";
        let src = SourceFile {
            path: "pipelines/sft.yaml",
            text,
        };
        let start = text.find("sft-base").unwrap();
        let diag = Diagnostic::error(
            "step `dpo` needs unknown step `sft-base`",
            Some(Span {
                start,
                end: start + 8,
            }),
        )
        .hint("defined steps are `model`, `sft`");
        let out = render(&[diag], &src, false);
        assert!(
            out.contains("error: step `dpo` needs unknown step `sft-base`"),
            "{out}"
        );
        assert!(out.contains("pipelines/sft.yaml:3:12"), "{out}");
        assert!(out.contains("model: sft-base"), "{out}");
        assert!(out.contains("^^^^^^^^"), "{out}");
        assert!(out.contains("hint: defined steps are"), "{out}");
    }

    #[test]
    fn suggestions() {
        assert_eq!(did_you_mean("lrr", ["lr", "epochs"]), Some("lr"));
        assert_eq!(did_you_mean("rnu", ["env", "inputs", "run"]), Some("run"));
        assert_eq!(
            did_you_mean("learning_rat", ["learning_rate", "epochs"]),
            Some("learning_rate")
        );
        assert_eq!(did_you_mean("zzz", ["learning_rate"]), None);
        assert_eq!(list(["a", "b", "c"]), "`a`, `b` and `c`");
    }
}
