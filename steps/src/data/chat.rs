//! Chat templates: a model's own Jinja `chat_template`, rendered the way transformers'
//! `apply_chat_template` does, or one of lf's built-in templates.
//!
//! transformers renders with Jinja2 (`trim_blocks`, `lstrip_blocks`, loop controls) and adds
//! `raise_exception`, `strftime_now` and a `tojson` that writes JSON like Python's `json.dumps`
//! (`ensure_ascii=False`, `", "`/`": "` separators, keys in insertion order). minijinja with the Python
//! string and dict methods of `minijinja-contrib`'s `pycompat` covers the rest. The goldens in
//! `tests/fixtures/chat_templates/` pin the output byte for byte.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use lf_schemas::kinds::dataset::TemplateName;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::Value as Json;

use super::format::Message;

/// The special-token strings a template may use (`bos_token`, `eos_token`, …).
#[derive(Debug, Clone, Default)]
pub struct TemplateTokens {
    /// `bos_token`.
    pub bos: Option<String>,
    /// `eos_token`.
    pub eos: Option<String>,
    /// `pad_token`.
    pub pad: Option<String>,
    /// `unk_token`.
    pub unk: Option<String>,
}

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    base: BTreeMap<String, Value>,
    /// The template's text (as given, before lf's preprocessing).
    pub source: String,
    /// blake3 of `source`, hex.
    pub hash: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; `tokens` and `vars` become template variables.
    pub fn new(
        source: &str,
        tokens: &TemplateTokens,
        vars: &BTreeMap<String, Json>,
    ) -> Result<ChatTemplate, Error> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat_template", strip_generation_tags(source))?;
        let mut base = BTreeMap::new();
        for (name, value) in [
            ("bos_token", &tokens.bos),
            ("eos_token", &tokens.eos),
            ("pad_token", &tokens.pad),
            ("unk_token", &tokens.unk),
        ] {
            if let Some(v) = value {
                base.insert(name.to_string(), Value::from(v.as_str()));
            }
        }
        for (k, v) in vars {
            base.insert(k.clone(), Value::from_serialize(v));
        }
        Ok(ChatTemplate {
            env,
            base,
            source: source.to_string(),
            hash: blake3::hash(source.as_bytes()).to_hex().to_string(),
        })
    }

    /// Renders a conversation. `tools` is the list of tool definitions, if any.
    pub fn render(
        &self,
        messages: &[Message],
        tools: Option<&Json>,
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        self.render_values(
            Value::from_serialize(messages),
            tools.map(Value::from_serialize),
            add_generation_prompt,
            &BTreeMap::new(),
        )
    }

    /// Renders messages given as template values (JSON-like objects), with extra variables.
    pub fn render_values(
        &self,
        messages: Value,
        tools: Option<Value>,
        add_generation_prompt: bool,
        extra: &BTreeMap<String, Value>,
    ) -> Result<String, Error> {
        let mut ctx = self.base.clone();
        ctx.insert("messages".into(), messages);
        // transformers passes these explicitly, as None when absent: `tools is defined` holds.
        ctx.insert("tools".into(), tools.unwrap_or(Value::from(())));
        ctx.insert("documents".into(), Value::from(()));
        ctx.insert(
            "add_generation_prompt".into(),
            Value::from(add_generation_prompt),
        );
        for (k, v) in extra {
            ctx.insert(k.clone(), v.clone());
        }
        self.env.get_template("chat_template")?.render(ctx)
    }
}

/// One line for an error of a template: its message without minijinja's template-name decoration.
pub fn describe_error(e: &Error) -> String {
    match (e.kind(), e.detail()) {
        (ErrorKind::InvalidOperation, Some(d)) => d.to_string(),
        (_, Some(d)) => format!("{}: {d}", e.kind()),
        _ => e.kind().to_string(),
    }
}

/// transformers' `{% generation %}…{% endgeneration %}` marks assistant text for its own masking;
/// lf finds replies itself, so the tags become no-op blocks (keeping their whitespace control).
fn strip_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let Some(len) = rest[start..].find("%}") else {
            break;
        };
        let tag = &rest[start + 2..start + len];
        let inner = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out.push_str(&rest[..start]);
        let open = if tag.starts_with('-') { "{%-" } else { "{%" };
        let close = if tag.ends_with('-') { "-%}" } else { "%}" };
        match inner {
            "generation" => write!(out, "{open} if true {close}").unwrap(),
            "endgeneration" => write!(out, "{open} endif {close}").unwrap(),
            _ => out.push_str(&rest[start..start + len + 2]),
        }
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

/// Python's `strftime` for the common directives, in UTC.
pub fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let yday = days - days_from_civil(y, 1, 1) + 1;
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => write!(out, "{d:02}"),
            Some('e') => write!(out, "{d:2}"),
            Some('m') => write!(out, "{m:02}"),
            Some('Y') => write!(out, "{y}"),
            Some('y') => write!(out, "{:02}", y.rem_euclid(100)),
            Some('b') => write!(out, "{}", &MONTHS[m as usize - 1][..3]),
            Some('B') => write!(out, "{}", MONTHS[m as usize - 1]),
            Some('a') => write!(out, "{}", &DAYS[weekday][..3]),
            Some('A') => write!(out, "{}", DAYS[weekday]),
            Some('H') => write!(out, "{hh:02}"),
            Some('I') => write!(out, "{:02}", (hh + 11) % 12 + 1),
            Some('p') => write!(out, "{}", if hh < 12 { "AM" } else { "PM" }),
            Some('M') => write!(out, "{mm:02}"),
            Some('S') => write!(out, "{ss:02}"),
            Some('j') => write!(out, "{yday:03}"),
            Some('%') => write!(out, "%"),
            Some(other) => write!(out, "%{other}"),
            None => write!(out, "%"),
        }
        .unwrap();
    }
    out
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `tojson` as transformers defines it: `json.dumps(x, ensure_ascii=False, indent=indent)`.
fn tojson(value: &Value, indent: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(v) => Some(v),
        None => kwargs.get::<Option<Value>>("indent")?,
    };
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) => Some(usize::try_from(v)?),
    };
    let mut out = String::new();
    write_py_json(value, indent, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Writes `value` as Python's `json.dumps` would (`ensure_ascii=False`).
pub fn write_py_json(
    value: &Value,
    indent: Option<usize>,
    level: usize,
    out: &mut String,
) -> Result<(), Error> {
    let newline = |out: &mut String, level: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * level));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if value.is_integer() {
                write!(out, "{value}").unwrap();
            } else {
                out.push_str(&py_float(f64::try_from(value.clone())?));
            }
        }
        ValueKind::String => py_string(value.as_str().unwrap_or_default(), out),
        ValueKind::Map => {
            let keys: Vec<Value> = value.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                match key.as_str() {
                    Some(s) => py_string(s, out),
                    None => py_string(&key.to_string(), out),
                }
                out.push_str(": ");
                write_py_json(&value.get_item(key)?, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, level + 1);
                write_py_json(item, indent, level + 1, out)?;
            }
            newline(out, level);
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot serialize {} to JSON", value.kind()),
            ));
        }
    }
    Ok(())
}

/// Python's `repr` of a float.
fn py_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').expect("exponent form");
        let exp: i32 = exp.parse().expect("integer exponent");
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if f.fract() == 0.0 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

fn py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A template written for lf.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its name.
    pub name: TemplateName,
    /// The Jinja source.
    pub source: &'static str,
    /// Special tokens it writes literally; a tokenizer trained for it gets them.
    pub specials: &'static [&'static str],
    /// The BOS token a tokenizer trained for it uses, if any.
    pub bos: Option<&'static str>,
    /// The EOS (end-of-turn) token a tokenizer trained for it uses.
    pub eos: &'static str,
}

const CHATML: &str = "{%- for message in messages %}
{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\\n' }}
{%- endif %}";

const LLAMA3: &str = "{{- bos_token }}
{%- for message in messages %}
{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + (message['content'] | trim) + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}";

const LLAMA2: &str = "{%- if messages and messages[0]['role'] == 'system' %}
{%- set system = messages[0]['content'] %}
{%- set turns = messages[1:] %}
{%- else %}
{%- set system = '' %}
{%- set turns = messages %}
{%- endif %}
{%- for message in turns %}
{%- if message['role'] == 'user' %}
{%- if loop.first and system %}
{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + (message['content'] | trim) + ' [/INST]' }}
{%- else %}
{{- bos_token + '[INST] ' + (message['content'] | trim) + ' [/INST]' }}
{%- endif %}
{%- elif message['role'] == 'assistant' %}
{{- ' ' + (message['content'] | trim) + ' ' + eos_token }}
{%- else %}
{{- raise_exception('the llama2 template has no role ' + message['role']) }}
{%- endif %}
{%- endfor %}";

const MISTRAL: &str = "{{- bos_token }}
{%- if messages and messages[0]['role'] == 'system' %}
{%- set system = messages[0]['content'] %}
{%- set turns = messages[1:] %}
{%- else %}
{%- set system = '' %}
{%- set turns = messages %}
{%- endif %}
{%- for message in turns %}
{%- if message['role'] == 'user' %}
{%- if loop.first and system %}
{{- '[INST] ' + system + '\\n\\n' + message['content'] + ' [/INST]' }}
{%- else %}
{{- '[INST] ' + message['content'] + ' [/INST]' }}
{%- endif %}
{%- elif message['role'] == 'assistant' %}
{{- message['content'] + eos_token }}
{%- else %}
{{- raise_exception('the mistral template has no role ' + message['role']) }}
{%- endif %}
{%- endfor %}";

const DEFAULT: &str = "{%- for message in messages %}
{%- if message['role'] == 'system' %}
{{- message['content'] + '\\n\\n' }}
{%- elif message['role'] == 'user' %}
{{- 'User: ' + message['content'] + '\\n' }}
{%- elif message['role'] == 'assistant' %}
{{- 'Assistant: ' + message['content'] + eos_token + '\\n' }}
{%- else %}
{{- message['role'] | capitalize }}: {{ message['content'] + '\\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- 'Assistant:' }}
{%- endif %}";

const EMPTY: &str = "{%- for message in messages %}
{{- message['content'] }}
{%- if message['role'] == 'assistant' %}
{{- eos_token }}
{%- endif %}
{%- endfor %}";

/// lf's built-in templates.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: TemplateName::Chatml,
        source: CHATML,
        specials: &["<|im_start|>", "<|im_end|>"],
        bos: None,
        eos: "<|im_end|>",
    },
    Builtin {
        name: TemplateName::Llama3,
        source: LLAMA3,
        specials: &[
            "<|begin_of_text|>",
            "<|start_header_id|>",
            "<|end_header_id|>",
            "<|eot_id|>",
        ],
        bos: Some("<|begin_of_text|>"),
        eos: "<|eot_id|>",
    },
    Builtin {
        name: TemplateName::Llama2,
        source: LLAMA2,
        specials: &["<s>", "</s>"],
        bos: Some("<s>"),
        eos: "</s>",
    },
    Builtin {
        name: TemplateName::Mistral,
        source: MISTRAL,
        specials: &["<s>", "</s>"],
        bos: Some("<s>"),
        eos: "</s>",
    },
    Builtin {
        name: TemplateName::Default,
        source: DEFAULT,
        specials: &[],
        bos: None,
        eos: "<|endoftext|>",
    },
    Builtin {
        name: TemplateName::Empty,
        source: EMPTY,
        specials: &[],
        bos: None,
        eos: "<|endoftext|>",
    },
];

/// The built-in template `name` (`None` for `auto`).
pub fn builtin(name: TemplateName) -> Option<&'static Builtin> {
    let name = match name {
        TemplateName::Qwen => TemplateName::Chatml,
        other => other,
    };
    BUILTINS.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::format::Role;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    fn tokens() -> TemplateTokens {
        TemplateTokens {
            bos: Some("<s>".into()),
            eos: Some("</s>".into()),
            pad: None,
            unk: None,
        }
    }

    #[test]
    fn python_json_matches_json_dumps() {
        let v = Value::from_serialize(serde_json::json!({
            "name": "get_weather", "n": 3, "x": 1.5, "big": 1e20, "small": 0.00001,
            "list": [1, "a\"b\n", null, true], "empty": {}, "unicode": "서울"
        }));
        let mut out = String::new();
        write_py_json(&v, None, 0, &mut out).unwrap();
        assert_eq!(
            out,
            r#"{"big": 1e+20, "empty": {}, "list": [1, "a\"b\n", null, true], "n": 3, "name": "get_weather", "small": 1e-05, "unicode": "서울", "x": 1.5}"#
        );
        let v = Value::from_serialize(serde_json::json!({"a": [1, 2], "b": {}}));
        let mut out = String::new();
        write_py_json(&v, Some(4), 0, &mut out).unwrap();
        assert_eq!(
            out,
            "{\n    \"a\": [\n        1,\n        2\n    ],\n    \"b\": {}\n}"
        );
    }

    #[test]
    fn strftime_formats_like_python() {
        // 2024-07-26 12:34:56 UTC, a Friday.
        let t = 1_721_997_296;
        assert_eq!(strftime("%d %b %Y", t), "26 Jul 2024");
        assert_eq!(
            strftime("%A %B %e %H:%M:%S %j %y %%", t),
            "Friday July 26 12:34:56 208 24 %"
        );
        assert_eq!(strftime("%d %b %Y", 0), "01 Jan 1970");
    }

    #[test]
    fn generation_tags_are_neutralised() {
        let src = "{%- for m in messages %}{% generation %}{{ m.content }}{%- endgeneration %}{% endfor %}";
        let t = ChatTemplate::new(src, &tokens(), &BTreeMap::new()).unwrap();
        let out = t
            .render(&[msg(Role::Assistant, "hi")], None, false)
            .unwrap();
        assert_eq!(out, "hi");
    }

    #[test]
    fn raise_exception_is_an_error_with_its_message() {
        let t = ChatTemplate::new(
            "{{ raise_exception('roles must alternate') }}",
            &tokens(),
            &BTreeMap::new(),
        )
        .unwrap();
        let e = t.render(&[], None, false).unwrap_err();
        assert_eq!(describe_error(&e), "roles must alternate");
    }

    #[test]
    fn builtin_templates_render_sanely() {
        let conv = [
            msg(Role::System, "Be brief."),
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello!"),
            msg(Role::User, "Who are you?"),
            msg(Role::Assistant, "Lumi."),
        ];
        let expect = [
            (
                TemplateName::Chatml,
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\nLumi.<|im_end|>\n",
                "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
            ),
            (
                TemplateName::Llama3,
                "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWho are you?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nLumi.<|eot_id|>",
                "<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
            (
                TemplateName::Llama2,
                "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] Who are you? [/INST] Lumi. </s>",
                "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]",
            ),
            (
                TemplateName::Mistral,
                "<s>[INST] Be brief.\n\nHi [/INST]Hello!</s>[INST] Who are you? [/INST]Lumi.</s>",
                "<s>[INST] Be brief.\n\nHi [/INST]",
            ),
            (
                TemplateName::Default,
                "Be brief.\n\nUser: Hi\nAssistant: Hello!</s>\nUser: Who are you?\nAssistant: Lumi.</s>\n",
                "Be brief.\n\nUser: Hi\nAssistant:",
            ),
            (
                TemplateName::Empty,
                "Be brief.HiHello!</s>Who are you?Lumi.</s>",
                "Be brief.Hi",
            ),
        ];
        for (name, full, prompt) in expect {
            let b = builtin(name).unwrap();
            let t = ChatTemplate::new(b.source, &tokens(), &BTreeMap::new()).unwrap();
            assert_eq!(t.render(&conv, None, false).unwrap(), full, "{name:?}");
            assert_eq!(
                t.render(&conv[..2], None, true).unwrap(),
                prompt,
                "{name:?}"
            );
            // The prompt of the first reply is a prefix of the whole conversation.
            assert!(full.starts_with(prompt), "{name:?}");
        }
    }
}

#[cfg(test)]
mod goldens {
    //! transformers' `apply_chat_template` renders of real models' templates, compared byte for byte.

    use std::path::PathBuf;

    use super::*;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/chat_templates")
    }

    fn token(config: &Json, key: &str) -> Option<String> {
        match &config[key] {
            Json::String(s) => Some(s.clone()),
            Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
            _ => None,
        }
    }

    #[test]
    fn goldens_render_byte_exact() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(fixtures())
            .expect("tests/fixtures/chat_templates exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("golden.json").exists())
            .collect();
        dirs.sort();
        assert!(dirs.len() >= 5, "expected the chat template goldens");
        let mut checked = 0;
        let mut failures = Vec::new();
        for dir in dirs {
            let read = |name: &str| -> Json {
                serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
            };
            let config = read("tokenizer_config.json");
            let golden = read("golden.json");
            let tokens = TemplateTokens {
                bos: token(&config, "bos_token"),
                eos: token(&config, "eos_token"),
                pad: token(&config, "pad_token"),
                unk: token(&config, "unk_token"),
            };
            let source = config["chat_template"].as_str().unwrap();
            let template = ChatTemplate::new(source, &tokens, &BTreeMap::new()).unwrap();
            let model = dir.file_name().unwrap().to_string_lossy().into_owned();
            for case in golden["cases"].as_array().unwrap() {
                let name = case["name"].as_str().unwrap();
                if case["date_dependent"].as_bool() == Some(true) {
                    continue;
                }
                let extra: BTreeMap<String, Value> = case["kwargs"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), Value::from_serialize(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let tools = case
                    .get("tools")
                    .filter(|t| !t.is_null())
                    .map(Value::from_serialize);
                let got = template.render_values(
                    Value::from_serialize(&case["messages"]),
                    tools,
                    case["add_generation_prompt"].as_bool().unwrap(),
                    &extra,
                );
                let expect_error = case["error"].as_bool() == Some(true);
                match (got, expect_error) {
                    (Ok(text), false) if Some(text.as_str()) == case["text"].as_str() => {}
                    (Err(_), true) => {}
                    (got, _) => failures.push(format!(
                        "{model}/{name}: expected {}, got {:?}",
                        if expect_error {
                            "an error".to_string()
                        } else {
                            format!("{:?}", case["text"].as_str().unwrap())
                        },
                        got.map_err(|e| describe_error(&e))
                    )),
                }
                checked += 1;
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(checked > 50, "only {checked} cases checked");
    }

    #[test]
    fn date_dependent_template_uses_today() {
        let dir = fixtures().join("llama-3.2-instruct");
        let config: Json = serde_json::from_str(
            &std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap(),
        )
        .unwrap();
        let template = ChatTemplate::new(
            config["chat_template"].as_str().unwrap(),
            &TemplateTokens::default(),
            &BTreeMap::new(),
        )
        .unwrap();
        let text = template
            .render(
                &[Message::new(crate::data::format::Role::User, "hi")],
                None,
                true,
            )
            .unwrap();
        let today = strftime_now("%d %b %Y".into());
        assert!(text.contains(&format!("Today Date: {today}\n")), "{text}");
    }
}
