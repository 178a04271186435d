//! The Ollama `Modelfile`: `FROM` the GGUF file, a Go `TEMPLATE` equivalent to the model's Jinja chat
//! template when one can be derived, the default `SYSTEM` prompt the template inserts, and `PARAMETER
//! stop` for the end-of-turn tokens.
//!
//! Jinja cannot be translated in general, so the Go template is *derived and then checked*: the Jinja
//! template is rendered on probe conversations whose contents are sentinels, the text around each
//! message is cut into per-role prefixes and suffixes, and a Go template of the usual Ollama shape is
//! built from them. That template is then emulated on other conversations (with and without a system
//! prompt, one and several turns) and must reproduce the Jinja output byte for byte; otherwise no
//! `TEMPLATE` is written and Ollama falls back to detecting the template from the GGUF's
//! `tokenizer.chat_template`.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use crate::data::chat::{ChatTemplate, TemplateTokens};
use crate::data::format::{Message, Role};

/// The pieces of a chat template of the "each message wrapped by its role" kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrappers {
    /// Text before the first message (a BOS token, usually).
    pub head: String,
    /// The system prompt the template inserts when there is none.
    pub default_system: Option<String>,
    /// Around a system message.
    pub system: (String, String),
    /// Around a user message.
    pub user: (String, String),
    /// Around an assistant message (the suffix is left out after the last message).
    pub assistant: (String, String),
    /// After the last user message: the start of the reply.
    pub generation: String,
    /// The Jinja template strips whitespace around message contents (`| trim`), which Go templates
    /// cannot: contents are then passed as they are.
    pub trims_content: bool,
}

const SYS: &str = "LFSYSTEMPROBE";
const U1: &str = "LFUSERPROBEONE";
const A1: &str = "LFASSISTANTPROBEONE";
const U2: &str = "LFUSERPROBETWO";

/// Renders `messages` (role, content) with `template`.
fn render(t: &ChatTemplate, messages: &[(Role, &str)], gen_prompt: bool) -> Option<String> {
    let msgs: Vec<Message> = messages.iter().map(|(r, c)| Message::new(*r, *c)).collect();
    t.render(&msgs, None, gen_prompt).ok()
}

/// Splits `text` at the given sentinels, in order: `n + 1` pieces.
fn cut(text: &str, sentinels: &[&str]) -> Option<Vec<String>> {
    let mut pieces = Vec::new();
    let mut rest = text;
    for s in sentinels {
        let at = rest.find(s)?;
        pieces.push(rest[..at].to_string());
        rest = &rest[at + s.len()..];
    }
    pieces.push(rest.to_string());
    Some(pieces)
}

fn common_suffix(a: &str, b: &str) -> String {
    let n = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .count();
    a.chars().skip(a.chars().count() - n).collect()
}

/// The template variables that pin templates which would otherwise print today's date.
pub fn pinned_vars() -> BTreeMap<String, Json> {
    BTreeMap::from([("date_string".to_string(), Json::from("26 Jul 2024"))])
}

/// Derives the per-role wrappers of `template` and checks them; `None` when the template is not of
/// that shape (or renders differently than the derived wrappers on any probe).
pub fn derive(template: &str, tokens: &TemplateTokens, adds_bos: bool) -> Option<Wrappers> {
    if template.contains("strftime_now") && !template.contains("date_string") {
        return None;
    }
    let t = ChatTemplate::new(template, tokens, &pinned_vars()).ok()?;
    use Role::{Assistant as A, System as S, User as U};
    // Without a system message.
    let r2 = render(&t, &[(U, U1), (A, A1), (U, U2)], true)?;
    let q = cut(&r2, &[U1, A1, U2])?;
    let r3 = render(&t, &[(U, U1)], false)?;
    let z = cut(&r3, &[U1])?;
    let r4 = render(&t, &[(U, U1)], true)?;
    let z4 = cut(&r4, &[U1])?;
    let r5 = render(&t, &[(U, U1), (A, A1)], false)?;
    let z5 = cut(&r5, &[U1, A1])?;
    let user_suffix = z[1].clone();
    let generation = z4[1].strip_prefix(&user_suffix)?.to_string();
    let assistant_prefix = q[1].strip_prefix(&user_suffix)?.to_string();
    let last_assistant_suffix = &z5[2];
    let user_prefix = match q[2].strip_prefix(last_assistant_suffix.as_str()) {
        Some(p) if q[0].ends_with(p) => p.to_string(),
        _ => common_suffix(&q[2], &q[0]),
    };
    let assistant_suffix = q[2].strip_suffix(&user_prefix)?.to_string();
    let head_nosys = q[0].strip_suffix(&user_prefix)?.to_string();
    // With one.
    let r1 = render(&t, &[(S, SYS), (U, U1), (A, A1), (U, U2)], true)?;
    let p = cut(&r1, &[SYS, U1, A1, U2])?;
    let system_suffix = p[1].strip_suffix(&user_prefix)?.to_string();
    let found = if let Some(system_prefix) = p[0].strip_prefix(&head_nosys) {
        Some((head_nosys.clone(), system_prefix.to_string(), None))
    } else if let Some(rest) = head_nosys.strip_prefix(&p[0])
        && let Some(default) = rest.strip_suffix(&system_suffix)
    {
        // Where the head ends inside `p[0]` only matters for leaving out a BOS the tokenizer adds.
        let head = match tokens.bos.as_deref() {
            Some(b) if adds_bos && !b.is_empty() && p[0].starts_with(b) => b,
            _ => "",
        };
        Some((
            head.to_string(),
            p[0][head.len()..].to_string(),
            Some(default.to_string()),
        ))
    } else {
        None
    };
    let (head, system_prefix, default_system) = found?;
    let w = Wrappers {
        head,
        default_system,
        system: (system_prefix, system_suffix),
        user: (user_prefix, user_suffix),
        assistant: (assistant_prefix, assistant_suffix),
        generation,
        trims_content: false,
    };
    // Check on conversations other than the probes.
    let checks: [&[(Role, &str)]; 4] = [
        &[(U, "Hello there!")],
        &[(S, "Be brief."), (U, "What is 2+2?")],
        &[
            (U, "Hi"),
            (A, "Hello! How can I help?"),
            (U, "Tell me a joke."),
        ],
        &[
            (S, "You are a pirate."),
            (U, "Hi"),
            (A, "Arr."),
            (U, "Where is the treasure?"),
            (A, "Buried."),
            (U, "Where exactly?"),
        ],
    ];
    for conv in checks {
        if render(&t, conv, true)? != emulate(&w, conv) {
            return None;
        }
    }
    // Contents with surrounding whitespace: kept, or trimmed by the template (`| trim`).
    let padded: &[(Role, &str)] = &[
        (S, " Be brief.\n"),
        (U, "  Hi\n"),
        (A, "Hello \n"),
        (U, "Bye\n"),
    ];
    let jinja = render(&t, padded, true)?;
    if jinja != emulate(&w, padded) {
        let trimmed: Vec<(Role, &str)> = padded.iter().map(|(r, c)| (*r, c.trim())).collect();
        if jinja != emulate(&w, &trimmed) {
            return None;
        }
        return Some(Wrappers {
            trims_content: true,
            ..w
        });
    }
    Some(w)
}

/// What the Go template of [`go_template`] renders for `messages`, with Ollama's handling of the
/// default system prompt (it is added as a first system message when the request has none).
pub fn emulate(w: &Wrappers, messages: &[(Role, &str)]) -> String {
    let mut msgs: Vec<(Role, &str)> = Vec::new();
    if let Some(d) = &w.default_system
        && messages.first().is_none_or(|(r, _)| *r != Role::System)
    {
        msgs.push((Role::System, d.as_str()));
    }
    msgs.extend_from_slice(messages);
    let mut out = w.head.clone();
    let n = msgs.len();
    for (i, (role, content)) in msgs.iter().enumerate() {
        let last = i + 1 == n;
        match role {
            Role::System => {
                out += &w.system.0;
                out += content;
                out += &w.system.1;
            }
            Role::User => {
                out += &w.user.0;
                out += content;
                out += &w.user.1;
                if last {
                    out += &w.generation;
                }
            }
            Role::Assistant => {
                out += &w.assistant.0;
                out += content;
                if !last {
                    out += &w.assistant.1;
                }
            }
            Role::Tool => {}
        }
    }
    out
}

/// `s` as a Go string literal in an action (`{{ "..." }}`), so that trim markers (`{{-`) around it
/// never eat its whitespace; empty for an empty string.
fn go_literal(s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let mut q = String::from("{{ \"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                q.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => q.push(c),
        }
    }
    q.push_str("\" }}");
    q
}

/// The Go template (Ollama's `TEMPLATE`) of `w`; `strip` is removed from the front of the head (the BOS
/// token, which llama.cpp adds itself). Every literal is a Go string in an action, so the layout
/// newlines and trim markers of the template do not touch it.
pub fn go_template(w: &Wrappers, strip: Option<&str>) -> String {
    let head = match strip {
        Some(s) if !s.is_empty() => w.head.strip_prefix(s).unwrap_or(&w.head),
        _ => &w.head,
    };
    let l = go_literal;
    let gen_prompt = if w.generation.is_empty() {
        String::new()
    } else {
        format!("{{{{ if $last }}}}{}{{{{ end }}}}", l(&w.generation))
    };
    let assistant_suffix = if w.assistant.1.is_empty() {
        String::new()
    } else {
        format!("{{{{ if not $last }}}}{}{{{{ end }}}}", l(&w.assistant.1))
    };
    format!(
        "{head}{{{{- range $i, $_ := .Messages }}}}\n\
         {{{{- $last := eq (len (slice $.Messages $i)) 1 }}}}\n\
         {{{{- if eq .Role \"system\" }}}}{sp}{{{{ .Content }}}}{ss}\n\
         {{{{- else if eq .Role \"user\" }}}}{up}{{{{ .Content }}}}{us}{gen_prompt}\n\
         {{{{- else if eq .Role \"assistant\" }}}}{ap}{{{{ .Content }}}}{assistant_suffix}\n\
         {{{{- end }}}}\n\
         {{{{- end }}}}",
        head = l(head),
        sp = l(&w.system.0),
        ss = l(&w.system.1),
        up = l(&w.user.0),
        us = l(&w.user.1),
        ap = l(&w.assistant.0),
    )
}

/// Quotes a `PARAMETER` value.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// What [`modelfile`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelfileInfo {
    /// Whether a Go `TEMPLATE` was written.
    pub template: bool,
    /// Whether the Jinja template trims message contents and the Go one cannot.
    pub trims_content: bool,
    /// The `PARAMETER stop` strings.
    pub stops: Vec<String>,
}

/// The `Modelfile` for `gguf_file`: with a `TEMPLATE` when `template` derives (see [`derive`]), else
/// a comment saying why not. `stops` are the end-of-turn token texts; the end of an assistant turn
/// is added to them when `is_token` says it is one token (e.g. `<|eot_id|>`).
pub fn modelfile(
    gguf_file: &str,
    template: Option<&str>,
    tokens: &TemplateTokens,
    adds_bos: bool,
    stops: &[String],
    is_token: &dyn Fn(&str) -> bool,
) -> (String, ModelfileInfo) {
    let mut out = String::from(
        "# Ollama Modelfile written by lf's `export` step: ollama create NAME -f Modelfile\n",
    );
    out += &format!("FROM ./{gguf_file}\n");
    let derived = template.and_then(|t| derive(t, tokens, adds_bos));
    let mut expressed = false;
    let mut stops = stops.to_vec();
    if let Some(w) = &derived {
        let end = w.assistant.1.trim();
        if !end.is_empty() && is_token(end) && !stops.iter().any(|s| s == end) {
            stops.push(end.to_string());
        }
    }
    match (&derived, template) {
        (Some(w), _) => {
            let strip = if adds_bos {
                tokens.bos.as_deref()
            } else {
                None
            };
            let go = go_template(w, strip);
            if go.contains("\"\"\"")
                || w.default_system
                    .as_ref()
                    .is_some_and(|s| s.contains("\"\"\""))
            {
                out += "# the chat template contains `\"\"\"` and cannot be quoted here; Ollama reads `tokenizer.chat_template` from the GGUF file instead\n";
            } else {
                out += &format!("TEMPLATE \"\"\"{go}\"\"\"\n");
                if let Some(s) = &w.default_system {
                    out += &format!("SYSTEM \"\"\"{s}\"\"\"\n");
                }
                expressed = true;
            }
        }
        (None, Some(_)) => {
            out += "# the chat template is not of the per-message form lf translates to a Go template; Ollama reads `tokenizer.chat_template` from the GGUF file instead\n";
        }
        (None, None) => {
            out += "# the model has no chat template: prompts are passed as they are\n";
        }
    }
    for s in &stops {
        out += &format!("PARAMETER stop {}\n", quote(s));
    }
    let info = ModelfileInfo {
        template: expressed,
        trims_content: expressed && derived.as_ref().is_some_and(|w| w.trims_content),
        stops,
    };
    (out, info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::chat::builtin;
    use lf_schemas::kinds::dataset::TemplateName;

    fn toks() -> TemplateTokens {
        TemplateTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            pad: None,
            unk: None,
        }
    }

    #[test]
    fn chatml_derives_its_wrappers() {
        let t = builtin(TemplateName::Chatml).unwrap().source;
        let w = derive(t, &toks(), false).expect("chatml is expressible");
        assert_eq!(w.head, "");
        assert_eq!(w.default_system, None);
        assert_eq!(w.user.0, "<|im_start|>user\n");
        assert_eq!(w.user.1, "<|im_end|>\n");
        assert_eq!(w.assistant.0, "<|im_start|>assistant\n");
        assert_eq!(w.assistant.1, "<|im_end|>\n");
        assert_eq!(w.generation, "<|im_start|>assistant\n");
        assert_eq!(w.system.0, "<|im_start|>system\n");
        let go = go_template(&w, None);
        assert!(
            go.contains(
                "{{- if eq .Role \"system\" }}{{ \"<|im_start|>system\\n\" }}{{ .Content }}{{ \"<|im_end|>\\n\" }}\n"
            ),
            "{go}"
        );
    }

    #[test]
    fn llama3_keeps_bos_out_of_the_go_template() {
        let t = builtin(TemplateName::Llama3).unwrap().source;
        let w = derive(t, &toks(), true).expect("llama3 is expressible");
        assert_eq!(w.head, "<s>");
        // lf's llama3 template trims contents; chatml does not.
        assert!(w.trims_content);
        let c = builtin(TemplateName::Chatml).unwrap().source;
        assert!(!derive(c, &toks(), false).unwrap().trims_content);
        let (mf, info) = modelfile("m.gguf", Some(t), &toks(), true, &["</s>".into()], &|s| {
            s == "<|eot_id|>"
        });
        assert!(info.template && info.trims_content);
        assert_eq!(
            info.stops,
            vec!["</s>".to_string(), "<|eot_id|>".to_string()]
        );
        assert!(
            mf.ends_with("PARAMETER stop \"</s>\"\nPARAMETER stop \"<|eot_id|>\"\n"),
            "{mf}"
        );
        let go = go_template(&w, Some("<s>"));
        assert!(go.starts_with("{{- range"), "{go}");
        // Without BOS added by the tokenizer, the head stays in the template.
        assert!(go_template(&w, None).starts_with("{{ \"<s>\" }}{{- range"));
    }

    #[test]
    fn default_system_prompts_are_found() {
        // SmolLM2's template adds a system prompt when there is none.
        let t = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/smollm2/tokenizer/chat_template.jinja"),
        )
        .unwrap();
        let w = derive(&t, &toks(), false).expect("SmolLM2's template is expressible");
        assert_eq!(
            w.default_system.as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        assert_eq!(w.head, "");
        assert_eq!(w.system.0, "<|im_start|>system\n");
    }

    #[test]
    fn go_literals_escape_quotes_and_control_characters() {
        assert_eq!(go_literal(""), "");
        assert_eq!(
            go_literal("a\"b\\c\n\t\u{1}é"),
            "{{ \"a\\\"b\\\\c\\n\\t\\x01é\" }}"
        );
    }

    #[test]
    fn llama2_system_inside_the_first_turn_is_not_expressible() {
        let t = builtin(TemplateName::Llama2).unwrap().source;
        assert!(derive(t, &toks(), true).is_none());
        let (mf, info) = modelfile("m.gguf", Some(t), &toks(), true, &["</s>".into()], &|_| {
            true
        });
        assert!(!info.template);
        assert!(mf.contains("FROM ./m.gguf\n"));
        assert!(mf.contains("PARAMETER stop \"</s>\"\n"));
        assert!(!mf.contains("TEMPLATE"));
    }
}
