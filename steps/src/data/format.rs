//! Dataset rows in alpaca, sharegpt, openai, preference or text form, made into [`Sample`]s:
//! conversations, preference pairs, replies marked desirable or not (KTO), or plain text.
//!
//! Column names and message tags follow LLaMA-Factory's `dataset_info.json` (`columns`, `tags`,
//! `formatting`, `ranking`), so an entry of such a file can be used as it is ([`dataset_info_entry`]).

use std::path::Path;

use lf_schemas::kinds::dataset::{Columns, Format, Tags};
use serde::Serialize;
use serde_json::{Map, Value as Json};

use super::error::{DataError, Origin, Pos, list};
use super::files::{Row, kind_of};

/// Who says a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The system prompt.
    System,
    /// The user.
    User,
    /// The model: its messages are what training teaches.
    Assistant,
    /// A tool's result.
    Tool,
}

/// One message of a conversation, as chat templates see it (`role`, `content`, `tool_calls`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Who says it.
    pub role: Role,
    /// Its text.
    pub content: String,
    /// Function calls of an assistant message, in the OpenAI form
    /// (`[{"type": "function", "function": {"name", "arguments"}}]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Json>,
}

impl Message {
    /// A message with text only.
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message {
            role,
            content: content.into(),
            tool_calls: None,
        }
    }
}

/// A conversation and the tools it may call.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Conversation {
    /// The messages, the system prompt (if any) first.
    pub messages: Vec<Message>,
    /// Tool definitions (a JSON list), if any.
    pub tools: Option<Json>,
}

/// A row, converted.
#[derive(Debug, Clone, PartialEq)]
pub enum Sample {
    /// A conversation (supervised fine-tuning).
    Chat(Conversation),
    /// Two replies to one prompt, the first preferred (reward modelling, DPO).
    Pair {
        /// The conversation up to the replies.
        prompt: Conversation,
        /// The preferred reply.
        chosen: Message,
        /// The other reply.
        rejected: Message,
        /// How far the chosen reply should out-score the other (`columns.margin`), if given.
        margin: Option<f64>,
    },
    /// A conversation whose last message, a reply, is marked desirable or undesirable (KTO).
    Feedback {
        /// The conversation, its reply last.
        conv: Conversation,
        /// Whether the reply is desirable (`columns.kto_tag`).
        desirable: bool,
        /// Another row's reply to the same prompt, for the KL estimate (set once all rows are
        /// known: see `build`).
        kl_reply: Option<Message>,
    },
    /// Plain text (pretraining).
    Text(String),
}

impl Sample {
    /// "conversations", "preference pairs" or "plain text", for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Sample::Chat(_) => "conversations",
            Sample::Pair { .. } => "preference pairs",
            Sample::Feedback { .. } => "replies marked desirable or not",
            Sample::Text(_) => "plain text",
        }
    }
}

/// A format with every column and tag name resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// The format (never `auto`); `Preference` rows are in sharegpt/openai form when `messages` is set.
    pub format: Format,
    /// Whether preference rows carry a message list (else alpaca columns).
    pub pair_messages: bool,
    /// Column names.
    pub columns: Resolved,
    /// Message keys and role names.
    pub tags: ResolvedTags,
}

/// Column names, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// alpaca instruction.
    pub prompt: String,
    /// alpaca input.
    pub query: String,
    /// alpaca output.
    pub response: String,
    /// alpaca history.
    pub history: String,
    /// message list.
    pub messages: String,
    /// system prompt.
    pub system: String,
    /// tool definitions.
    pub tools: String,
    /// preferred reply.
    pub chosen: String,
    /// rejected reply.
    pub rejected: String,
    /// margin of a pair (none: no margin column).
    pub margin: Option<String>,
    /// whether a reply is desirable (KTO).
    pub kto_tag: String,
    /// text.
    pub text: String,
}

/// Message keys and role names, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedTags {
    /// Key of the role.
    pub role: String,
    /// Key of the text.
    pub content: String,
    /// User role name.
    pub user: String,
    /// Assistant role name.
    pub assistant: String,
    /// Tool-result role name.
    pub observation: String,
    /// Function-call role name.
    pub function: String,
    /// System role name.
    pub system: String,
}

impl ResolvedTags {
    fn sharegpt(tags: &Tags) -> ResolvedTags {
        let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        ResolvedTags {
            role: or(&tags.role_tag, "from"),
            content: or(&tags.content_tag, "value"),
            user: or(&tags.user_tag, "human"),
            assistant: or(&tags.assistant_tag, "gpt"),
            observation: or(&tags.observation_tag, "observation"),
            function: or(&tags.function_tag, "function_call"),
            system: or(&tags.system_tag, "system"),
        }
    }

    fn openai(tags: &Tags) -> ResolvedTags {
        let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
        ResolvedTags {
            role: or(&tags.role_tag, "role"),
            content: or(&tags.content_tag, "content"),
            user: or(&tags.user_tag, "user"),
            assistant: or(&tags.assistant_tag, "assistant"),
            observation: or(&tags.observation_tag, "tool"),
            function: or(&tags.function_tag, "function_call"),
            system: or(&tags.system_tag, "system"),
        }
    }
}

/// Decides the layout of a file from the parameters and, for `auto` and untagged message lists, its
/// first row.
pub fn resolve(
    format: Format,
    columns: &Columns,
    tags: &Tags,
    first: Option<&Row>,
) -> Result<Layout, DataError> {
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_string());
    let first_obj = first.and_then(|r| r.value.as_object());
    let has = |k: &str| first_obj.is_some_and(|o| o.contains_key(k));
    // The message column: the one given, else whichever of the usual names the row has.
    let messages_col = columns.messages.clone().unwrap_or_else(|| {
        if format == Format::Openai || (!has("conversations") && has("messages")) {
            "messages".into()
        } else {
            "conversations".into()
        }
    });
    let format = match format {
        Format::Auto => match first {
            None => Format::Text,
            Some(row) => detect(row, columns, &messages_col)?,
        },
        f => f,
    };
    let pair_messages = format == Format::Preference && has(&messages_col);
    let tags = if tags.role_tag.is_none() && matches!(format, Format::Sharegpt | Format::Openai)
        || pair_messages && tags.role_tag.is_none()
    {
        // Untagged message lists: take the keys the first message uses.
        let first_msg = first_obj
            .and_then(|o| o.get(&messages_col))
            .and_then(Json::as_array)
            .and_then(|a| a.first())
            .and_then(Json::as_object);
        match first_msg {
            Some(m) if m.contains_key("role") && !m.contains_key("from") => {
                ResolvedTags::openai(tags)
            }
            Some(m) if m.contains_key("from") => ResolvedTags::sharegpt(tags),
            _ if format == Format::Openai => ResolvedTags::openai(tags),
            _ => ResolvedTags::sharegpt(tags),
        }
    } else if format == Format::Openai {
        ResolvedTags::openai(tags)
    } else {
        ResolvedTags::sharegpt(tags)
    };
    Ok(Layout {
        format,
        pair_messages,
        columns: Resolved {
            prompt: or(&columns.prompt, "instruction"),
            query: or(&columns.query, "input"),
            response: or(&columns.response, "output"),
            history: or(&columns.history, "history"),
            messages: messages_col,
            system: or(&columns.system, "system"),
            tools: or(&columns.tools, "tools"),
            chosen: or(&columns.chosen, "chosen"),
            rejected: or(&columns.rejected, "rejected"),
            margin: columns.margin.clone(),
            text: or(&columns.text, "text"),
            kto_tag: or(&columns.kto_tag, "kto_tag"),
        },
        tags,
    })
}

fn detect(row: &Row, columns: &Columns, messages_col: &str) -> Result<Format, DataError> {
    let obj = match &row.value {
        Json::String(_) => return Ok(Format::Text),
        Json::Object(o) => o,
        other => {
            return Err(DataError::row(
                &row.origin,
                format!("is {}, not an object", kind_of(other)),
            ));
        }
    };
    let has = |c: &Option<String>, d: &str| obj.contains_key(c.as_deref().unwrap_or(d));
    Ok(
        if has(&columns.chosen, "chosen") && has(&columns.rejected, "rejected") {
            Format::Preference
        } else if obj.contains_key(messages_col) {
            let first = obj[messages_col]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Json::as_object);
            if first.is_some_and(|m| m.contains_key("role")) {
                Format::Openai
            } else {
                Format::Sharegpt
            }
        } else if has(&columns.prompt, "instruction") {
            Format::Alpaca
        } else if has(&columns.text, "text") {
            Format::Text
        } else {
            return Err(DataError::row_hint(
                &row.origin,
                format!(
                    "cannot tell the format from the columns {}",
                    list(obj.keys())
                ),
                "set `format` (alpaca, sharegpt, openai, preference or text) and, if the names differ, `columns`",
            ));
        },
    )
}

impl Layout {
    /// Converts one row.
    pub fn convert(&self, row: &Row) -> Result<Sample, DataError> {
        let at = &row.origin;
        if let Json::String(text) = &row.value {
            return match self.format {
                Format::Text => Ok(Sample::Text(text.clone())),
                _ => Err(DataError::row_hint(
                    at,
                    "is plain text, not a row with columns",
                    "plain-text files are `format: text`",
                )),
            };
        }
        let obj = row.value.as_object().ok_or_else(|| {
            DataError::row(at, format!("is {}, not an object", kind_of(&row.value)))
        })?;
        let c = &self.columns;
        match self.format {
            Format::Text => Ok(Sample::Text(req_text(obj, &c.text, at)?)),
            Format::Alpaca => {
                let mut conv = self.alpaca_prompt(obj, at)?;
                conv.messages.push(Message::new(
                    Role::Assistant,
                    req_text(obj, &c.response, at)?,
                ));
                Ok(Sample::Chat(conv))
            }
            Format::Sharegpt | Format::Openai => Ok(Sample::Chat(self.message_list(obj, at)?)),
            Format::Preference => {
                let prompt = if self.pair_messages {
                    self.message_list(obj, at)?
                } else {
                    self.alpaca_prompt(obj, at)?
                };
                let chosen = self.reply(obj, &c.chosen, at)?;
                let rejected = self.reply(obj, &c.rejected, at)?;
                let margin = match &c.margin {
                    None => None,
                    Some(col) => Some(number(obj, col, at)?),
                };
                Ok(Sample::Pair {
                    prompt,
                    chosen,
                    rejected,
                    margin,
                })
            }
            Format::Auto => unreachable!("resolved before converting"),
        }
    }

    /// Converts one row for KTO: a conversation and its `kto_tag` give one sample; a preference pair
    /// gives two, its chosen reply desirable and its rejected one not (TRL's
    /// `unpair_preference_dataset`).
    pub fn feedback(&self, row: &Row) -> Result<Vec<Sample>, DataError> {
        let at = &row.origin;
        match self.convert(row)? {
            Sample::Chat(conv) => {
                let obj = row
                    .value
                    .as_object()
                    .expect("a conversation comes from an object");
                let desirable = flag(obj, &self.columns.kto_tag, at)?;
                Ok(vec![Sample::Feedback {
                    conv,
                    desirable,
                    kl_reply: None,
                }])
            }
            Sample::Pair {
                prompt,
                chosen,
                rejected,
                ..
            } => Ok([(chosen, true), (rejected, false)]
                .into_iter()
                .map(|(reply, desirable)| {
                    let mut conv = prompt.clone();
                    conv.messages.push(reply);
                    Sample::Feedback {
                        conv,
                        desirable,
                        kl_reply: None,
                    }
                })
                .collect()),
            other => Ok(vec![other]),
        }
    }

    /// The text a pretraining row contributes: `text`, or an alpaca row's instruction.
    pub fn pretraining_text(&self, row: &Row) -> Result<Option<String>, DataError> {
        if self.format != Format::Alpaca {
            return Ok(None);
        }
        let obj = row.value.as_object().ok_or_else(|| {
            DataError::row(
                &row.origin,
                format!("is {}, not an object", kind_of(&row.value)),
            )
        })?;
        req_text(obj, &self.columns.prompt, &row.origin).map(Some)
    }

    /// system, history, and the instruction (with its input) as the last user message.
    fn alpaca_prompt(
        &self,
        obj: &Map<String, Json>,
        at: &Origin,
    ) -> Result<Conversation, DataError> {
        let c = &self.columns;
        let mut messages = Vec::new();
        if let Some(system) = opt_text(obj, &c.system, at)?.filter(|s| !s.is_empty()) {
            messages.push(Message::new(Role::System, system));
        }
        match obj.get(&c.history) {
            None | Some(Json::Null) => {}
            Some(Json::Array(turns)) => {
                for (i, turn) in turns.iter().enumerate() {
                    let pair = turn
                        .as_array()
                        .filter(|p| p.len() == 2 && p.iter().all(Json::is_string))
                        .ok_or_else(|| {
                            DataError::row(
                                at,
                                format!(
                                    "`{}` item {} is not a pair of strings [instruction, reply]",
                                    c.history,
                                    i + 1
                                ),
                            )
                        })?;
                    messages.push(Message::new(Role::User, pair[0].as_str().unwrap()));
                    messages.push(Message::new(Role::Assistant, pair[1].as_str().unwrap()));
                }
            }
            Some(other) => {
                return Err(DataError::row(
                    at,
                    format!("`{}` is {}, not a list of pairs", c.history, kind_of(other)),
                ));
            }
        }
        let mut prompt = req_text(obj, &c.prompt, at)?;
        if let Some(query) = opt_text(obj, &c.query, at)?.filter(|q| !q.is_empty()) {
            prompt.push('\n');
            prompt.push_str(&query);
        }
        messages.push(Message::new(Role::User, prompt));
        Ok(Conversation {
            messages,
            tools: self.tools(obj, at)?,
        })
    }

    fn tools(&self, obj: &Map<String, Json>, at: &Origin) -> Result<Option<Json>, DataError> {
        match obj.get(&self.columns.tools) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Json::String(s)) => serde_json::from_str(s).map(Some).map_err(|e| {
                DataError::row(
                    at,
                    format!("`{}` is not valid JSON: {e}", self.columns.tools),
                )
            }),
            Some(v @ (Json::Array(_) | Json::Object(_))) => Ok(Some(v.clone())),
            Some(other) => Err(DataError::row(
                at,
                format!(
                    "`{}` is {}, not a list of tools",
                    self.columns.tools,
                    kind_of(other)
                ),
            )),
        }
    }

    fn message_list(
        &self,
        obj: &Map<String, Json>,
        at: &Origin,
    ) -> Result<Conversation, DataError> {
        let c = &self.columns;
        let items = match obj.get(&c.messages) {
            Some(Json::Array(items)) => items,
            Some(other) => {
                return Err(DataError::row(
                    at,
                    format!(
                        "`{}` is {}, not a list of messages",
                        c.messages,
                        kind_of(other)
                    ),
                ));
            }
            None => return Err(missing(obj, &c.messages, at)),
        };
        let mut messages = Vec::with_capacity(items.len() + 1);
        for (i, item) in items.iter().enumerate() {
            messages.push(self.message(item, at, &format!("`{}` item {}", c.messages, i + 1))?);
        }
        if let Some(system) = opt_text(obj, &c.system, at)?.filter(|s| !s.is_empty())
            && messages.first().is_none_or(|m| m.role != Role::System)
        {
            messages.insert(0, Message::new(Role::System, system));
        }
        Ok(Conversation {
            messages,
            tools: self.tools(obj, at)?,
        })
    }

    fn message(&self, item: &Json, at: &Origin, what: &str) -> Result<Message, DataError> {
        let t = &self.tags;
        let obj = item.as_object().ok_or_else(|| {
            DataError::row(at, format!("{what} is {}, not a message", kind_of(item)))
        })?;
        let role_name = match obj.get(&t.role) {
            Some(Json::String(r)) => r.as_str(),
            _ => {
                return Err(DataError::row_hint(
                    at,
                    format!("{what} has no `{}` role key", t.role),
                    format!(
                        "its keys are {}; set `tags.role_tag` and `tags.content_tag` to the names used",
                        list(obj.keys())
                    ),
                ));
            }
        };
        let content = match obj.get(&t.content) {
            None | Some(Json::Null) if obj.contains_key("tool_calls") => String::new(),
            None => {
                return Err(DataError::row_hint(
                    at,
                    format!("{what} has no `{}` key", t.content),
                    format!(
                        "its keys are {}; set `tags.content_tag` to the name used",
                        list(obj.keys())
                    ),
                ));
            }
            Some(v) => content_text(v).map_err(|m| DataError::row(at, format!("{what}: {m}")))?,
        };
        let role = if role_name == t.user {
            Role::User
        } else if role_name == t.assistant {
            Role::Assistant
        } else if role_name == t.system {
            Role::System
        } else if role_name == t.observation {
            Role::Tool
        } else if role_name == t.function {
            return Ok(function_call(content));
        } else {
            return Err(DataError::row_hint(
                at,
                format!("{what} has the unknown role `{role_name}`"),
                format!(
                    "roles are {} (user), {} (assistant), {} (system), {} (tool result) and {} (function call); map others with `tags`",
                    list([&t.user]),
                    list([&t.assistant]),
                    list([&t.system]),
                    list([&t.observation]),
                    list([&t.function])
                ),
            ));
        };
        Ok(Message {
            role,
            content,
            tool_calls: obj.get("tool_calls").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// A preference reply: a string, or a message object.
    fn reply(
        &self,
        obj: &Map<String, Json>,
        column: &str,
        at: &Origin,
    ) -> Result<Message, DataError> {
        match obj.get(column) {
            None => Err(missing(obj, column, at)),
            Some(Json::String(s)) => Ok(Message::new(Role::Assistant, s.clone())),
            Some(v @ Json::Object(_)) => {
                let m = self.message(v, at, &format!("`{column}`"))?;
                if m.role != Role::Assistant {
                    return Err(DataError::row(
                        at,
                        format!("`{column}` is not an assistant message"),
                    ));
                }
                Ok(m)
            }
            Some(other) => Err(DataError::row(
                at,
                format!("`{column}` is {}, not a reply", kind_of(other)),
            )),
        }
    }
}

/// A sharegpt `function_call` message: the call as OpenAI `tool_calls` when it parses as
/// `{"name", "arguments"}` (or a list of them), else the text as it is.
fn function_call(content: String) -> Message {
    let call = |v: &Json| -> Option<Json> {
        let o = v.as_object()?;
        let name = o.get("name")?.as_str()?;
        Some(serde_json::json!({
            "type": "function",
            "function": {"name": name, "arguments": o.get("arguments").cloned().unwrap_or(Json::Null)},
        }))
    };
    let calls = match serde_json::from_str::<Json>(&content) {
        Ok(Json::Array(items)) => items.iter().map(call).collect::<Option<Vec<_>>>(),
        Ok(v) => call(&v).map(|c| vec![c]),
        Err(_) => None,
    };
    match calls {
        Some(calls) if !calls.is_empty() => Message {
            role: Role::Assistant,
            content: String::new(),
            tool_calls: Some(Json::Array(calls)),
        },
        _ => Message::new(Role::Assistant, content),
    }
}

/// The text of a message's content: a string, or OpenAI content parts of type `text`.
fn content_text(v: &Json) -> Result<String, String> {
    match v {
        Json::Null => Ok(String::new()),
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Json::as_str), part.get("text")) {
                    (Some("text") | None, Some(Json::String(t))) => text.push_str(t),
                    (Some(kind), _) => {
                        return Err(format!("content parts of type `{kind}` are not supported"));
                    }
                    _ => return Err("content parts must be `{type: text, text}`".into()),
                }
            }
            Ok(text)
        }
        other => Err(format!("content is {}, not text", kind_of(other))),
    }
}

fn missing(obj: &Map<String, Json>, column: &str, at: &Origin) -> DataError {
    DataError::MissingColumn {
        at: at.clone(),
        column: column.to_string(),
        available: list(obj.keys()),
        extra: Some("map the names with `columns`".into()),
    }
}

/// A boolean in `column`: `true`/`false`, `1`/`0`, or a string holding one of those (CSV).
fn flag(obj: &Map<String, Json>, column: &str, at: &Origin) -> Result<bool, DataError> {
    let v = match obj.get(column) {
        None => {
            let mut e = missing(obj, column, at);
            if let DataError::MissingColumn { extra, .. } = &mut e {
                *extra = Some(
                    "KTO rows mark their reply desirable or not; name that column with `columns: {kto_tag: ...}`"
                        .into(),
                );
            }
            return Err(e);
        }
        Some(Json::Bool(b)) => Some(*b),
        Some(Json::Number(n)) => match n.as_u64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Some(Json::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" => Some(true),
            "false" | "0" => Some(false),
            _ => None,
        },
        Some(_) => None,
    };
    v.ok_or_else(|| {
        DataError::row(
            at,
            format!(
                "`{column}` is {}, not true or false",
                kind_of(obj.get(column).unwrap_or(&Json::Null))
            ),
        )
    })
}

/// A finite number (or a string holding one) in `column`.
fn number(obj: &Map<String, Json>, column: &str, at: &Origin) -> Result<f64, DataError> {
    let v = match obj.get(column) {
        None => return Err(missing(obj, column, at)),
        Some(Json::Number(n)) => n.as_f64(),
        Some(Json::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    v.filter(|x| x.is_finite()).ok_or_else(|| {
        DataError::row(
            at,
            format!(
                "`{column}` is {}, not a number",
                kind_of(obj.get(column).unwrap_or(&Json::Null))
            ),
        )
    })
}

fn req_text(obj: &Map<String, Json>, column: &str, at: &Origin) -> Result<String, DataError> {
    match opt_text(obj, column, at)? {
        Some(s) => Ok(s),
        None if obj.contains_key(column) => Ok(String::new()),
        None => Err(missing(obj, column, at)),
    }
}

fn opt_text(
    obj: &Map<String, Json>,
    column: &str,
    at: &Origin,
) -> Result<Option<String>, DataError> {
    match obj.get(column) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(v @ (Json::Number(_) | Json::Bool(_))) => Ok(Some(v.to_string())),
        Some(other) => Err(DataError::row(
            at,
            format!("`{column}` is {}, not text", kind_of(other)),
        )),
    }
}

/// What an entry of a `dataset_info.json` says.
#[derive(Debug, Clone, PartialEq)]
pub struct InfoEntry {
    /// The data file or folder, relative to the `dataset_info.json`.
    pub file_name: String,
    /// The format.
    pub format: Format,
    /// Column names.
    pub columns: Columns,
    /// Message tags.
    pub tags: Tags,
    /// `num_samples`, if given.
    pub num_samples: Option<usize>,
}

/// Reads entry `name` of the `dataset_info.json` at `path`.
pub fn dataset_info_entry(path: &Path, label: &str, name: &str) -> Result<InfoEntry, DataError> {
    let at = Origin {
        file: label.into(),
        pos: Pos::File,
    };
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let all: Map<String, Json> = serde_json::from_str(&text)
        .map_err(|e| DataError::row(&at, format!("invalid JSON: {e}")))?;
    let entry = all.get(name).and_then(Json::as_object).ok_or_else(|| {
        let mut names: Vec<&String> = all.keys().collect();
        names.sort_by_key(|n| strsim_distance(n, name));
        DataError::row_hint(
            &at,
            format!("has no entry `{name}`"),
            format!(
                "entries are {}",
                list(names.iter().take(8).map(|s| s.as_str()))
            ),
        )
    })?;
    let at = Origin {
        file: format!("{label} entry {name}").into(),
        pos: Pos::File,
    };
    let file_name = match entry.get("file_name").and_then(Json::as_str) {
        Some(f) => f.to_string(),
        None => {
            let remote = [
                "hf_hub_url",
                "ms_hub_url",
                "om_hub_url",
                "script_url",
                "cloud_file_name",
            ]
            .iter()
            .find(|k| entry.contains_key(**k));
            return Err(DataError::row_hint(
                &at,
                match remote {
                    Some(k) => format!("is remote (`{k}`); lf reads local files only"),
                    None => "has no `file_name`".to_string(),
                },
                "fetch it with a `download` step (repo_type: dataset) and use that step as `source`",
            ));
        }
    };
    let formatting = entry
        .get("formatting")
        .and_then(Json::as_str)
        .unwrap_or("alpaca");
    let ranking = entry
        .get("ranking")
        .and_then(Json::as_bool)
        .unwrap_or(false);
    let format = match (formatting, ranking) {
        (_, true) => Format::Preference,
        ("alpaca", false) => Format::Alpaca,
        ("sharegpt", false) => Format::Sharegpt,
        ("openai", false) => Format::Openai,
        (other, _) => {
            return Err(DataError::row(
                &at,
                format!("has the unknown formatting `{other}`"),
            ));
        }
    };
    let strings = |key: &str| -> Result<Map<String, Json>, DataError> {
        match entry.get(key) {
            None => Ok(Map::new()),
            Some(Json::Object(o)) => Ok(o.clone()),
            Some(other) => Err(DataError::row(
                &at,
                format!("`{key}` is {}, not an object", kind_of(other)),
            )),
        }
    };
    let cols = strings("columns")?;
    for media in ["images", "videos", "audios"] {
        if cols.contains_key(media) {
            return Err(DataError::row(
                &at,
                format!("has `{media}`; lf trains on text only"),
            ));
        }
    }
    let get = |m: &Map<String, Json>, k: &str| m.get(k).and_then(Json::as_str).map(str::to_string);
    let columns = Columns {
        prompt: get(&cols, "prompt"),
        query: get(&cols, "query"),
        response: get(&cols, "response"),
        history: get(&cols, "history"),
        messages: get(&cols, "messages"),
        system: get(&cols, "system"),
        tools: get(&cols, "tools"),
        chosen: get(&cols, "chosen"),
        rejected: get(&cols, "rejected"),
        margin: get(&cols, "margin"),
        text: None,
        kto_tag: get(&cols, "kto_tag"),
    };
    let t = strings("tags")?;
    let tags = Tags {
        role_tag: get(&t, "role_tag"),
        content_tag: get(&t, "content_tag"),
        user_tag: get(&t, "user_tag"),
        assistant_tag: get(&t, "assistant_tag"),
        observation_tag: get(&t, "observation_tag"),
        function_tag: get(&t, "function_tag"),
        system_tag: get(&t, "system_tag"),
    };
    Ok(InfoEntry {
        file_name,
        format,
        columns,
        tags,
        num_samples: entry
            .get("num_samples")
            .and_then(Json::as_u64)
            .map(|n| n as usize),
    })
}

fn strsim_distance(a: &str, b: &str) -> usize {
    // Levenshtein distance, for ordering suggestions.
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(v: Json) -> Row {
        Row {
            origin: Origin {
                file: "d.json".into(),
                pos: Pos::Row(3),
            },
            value: v,
        }
    }

    fn convert(format: Format, columns: Columns, tags: Tags, v: Json) -> Result<Sample, DataError> {
        let r = row(v);
        resolve(format, &columns, &tags, Some(&r))?.convert(&r)
    }

    fn chat(s: Sample) -> Vec<(Role, String)> {
        match s {
            Sample::Chat(c) => c
                .messages
                .into_iter()
                .map(|m| (m.role, m.content))
                .collect(),
            other => panic!("not a conversation: {other:?}"),
        }
    }

    #[test]
    fn alpaca_joins_instruction_and_input_and_keeps_history() {
        let s = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"instruction": "Add", "input": "2+2", "output": "4", "system": "Be exact.",
                   "history": [["Hi", "Hello"]]}),
        )
        .unwrap();
        assert_eq!(
            chat(s),
            vec![
                (Role::System, "Be exact.".into()),
                (Role::User, "Hi".into()),
                (Role::Assistant, "Hello".into()),
                (Role::User, "Add\n2+2".into()),
                (Role::Assistant, "4".into()),
            ]
        );
    }

    #[test]
    fn columns_rename_alpaca_fields() {
        let cols = Columns {
            prompt: Some("q".into()),
            response: Some("a".into()),
            ..Columns::default()
        };
        let s = convert(
            Format::Alpaca,
            cols,
            Tags::default(),
            json!({"q": "Why?", "a": "Because."}),
        )
        .unwrap();
        assert_eq!(
            chat(s),
            vec![
                (Role::User, "Why?".into()),
                (Role::Assistant, "Because.".into())
            ]
        );
    }

    #[test]
    fn missing_column_names_it_and_lists_the_row_columns() {
        let e = convert(
            Format::Alpaca,
            Columns::default(),
            Tags::default(),
            json!({"instruction": "x", "answer": "y"}),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "`d.json` row 3: no column `output`\nhint: its columns are `answer` and `instruction`; map the names with `columns`"
        );
    }

    #[test]
    fn sharegpt_and_openai_messages() {
        let s = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                     {"from": "gpt", "value": "A"}]}),
        )
        .unwrap();
        assert_eq!(
            chat(s),
            vec![
                (Role::System, "S".into()),
                (Role::User, "Q".into()),
                (Role::Assistant, "A".into())
            ]
        );
        let s = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "Q"}]},
                                {"role": "assistant", "content": "A"}], "system": "S"}),
        )
        .unwrap();
        assert_eq!(
            chat(s),
            vec![
                (Role::System, "S".into()),
                (Role::User, "Q".into()),
                (Role::Assistant, "A".into())
            ]
        );
    }

    #[test]
    fn sharegpt_tags_map_role_names() {
        let tags = Tags {
            role_tag: Some("speaker".into()),
            content_tag: Some("text".into()),
            user_tag: Some("me".into()),
            assistant_tag: Some("bot".into()),
            ..Tags::default()
        };
        let cols = Columns {
            messages: Some("dialog".into()),
            ..Columns::default()
        };
        let v =
            json!({"dialog": [{"speaker": "me", "text": "Q"}, {"speaker": "bot", "text": "A"}]});
        let s = convert(Format::Sharegpt, cols.clone(), tags.clone(), v).unwrap();
        assert_eq!(
            chat(s),
            vec![(Role::User, "Q".into()), (Role::Assistant, "A".into())]
        );
        let v = json!({"dialog": [{"speaker": "me", "text": "Q"}, {"speaker": "narrator", "text": "A"}]});
        let e = convert(Format::Sharegpt, cols, tags, v)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("`d.json` row 3: `dialog` item 2 has the unknown role `narrator`"),
            "{e}"
        );
    }

    #[test]
    fn function_calls_become_tool_calls() {
        let s = convert(
            Format::Sharegpt,
            Columns::default(),
            Tags::default(),
            json!({"conversations": [
                {"from": "human", "value": "Weather?"},
                {"from": "function_call", "value": "{\"name\": \"weather\", \"arguments\": {\"city\": \"Oslo\"}}"},
                {"from": "observation", "value": "sunny"},
                {"from": "gpt", "value": "Sunny."}], "tools": "[{\"name\": \"weather\"}]"}),
        )
        .unwrap();
        let Sample::Chat(c) = s else { panic!() };
        assert_eq!(c.messages[1].role, Role::Assistant);
        assert_eq!(
            c.messages[1].tool_calls.as_ref().unwrap()[0]["function"]["arguments"]["city"],
            "Oslo"
        );
        assert_eq!(c.messages[2].role, Role::Tool);
        assert_eq!(c.tools.unwrap()[0]["name"], "weather");
    }

    #[test]
    fn a_margin_column_gives_pairs_their_margin() {
        let cols = Columns {
            margin: Some("m".into()),
            ..Columns::default()
        };
        let pair = |m: Json| {
            convert(
                Format::Preference,
                cols.clone(),
                Tags::default(),
                json!({"instruction": "Q", "chosen": "good", "rejected": "bad", "m": m}),
            )
        };
        let Sample::Pair { margin, .. } = pair(json!(1.5)).unwrap() else {
            panic!()
        };
        assert_eq!(margin, Some(1.5));
        let Sample::Pair { margin, .. } = pair(json!("0.25")).unwrap() else {
            panic!()
        };
        assert_eq!(margin, Some(0.25));
        let e = pair(json!([1])).unwrap_err().to_string();
        assert!(e.contains("`m` is an array, not a number"), "{e}");
    }

    #[test]
    fn preference_pairs_in_both_forms() {
        let s = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"instruction": "Who are you?", "input": "", "chosen": "Lumi.", "rejected": "A human."}),
        )
        .unwrap();
        let Sample::Pair {
            prompt,
            chosen,
            rejected,
            margin: None,
        } = s
        else {
            panic!()
        };
        assert_eq!(
            prompt.messages,
            vec![Message::new(Role::User, "Who are you?")]
        );
        assert_eq!(chosen.content, "Lumi.");
        assert_eq!(rejected.content, "A human.");
        let s = convert(
            Format::Preference,
            Columns::default(),
            Tags::default(),
            json!({"conversations": [{"from": "human", "value": "Q"}],
                   "chosen": {"from": "gpt", "value": "good"}, "rejected": {"from": "gpt", "value": "bad"}}),
        )
        .unwrap();
        let Sample::Pair { chosen, .. } = s else {
            panic!()
        };
        assert_eq!(chosen.content, "good");
    }

    #[test]
    fn text_rows() {
        let s = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"text": "hello"}),
        )
        .unwrap();
        assert_eq!(s, Sample::Text("hello".into()));
    }

    #[test]
    fn unknown_layout_is_an_error_with_a_hint() {
        let e = convert(
            Format::Auto,
            Columns::default(),
            Tags::default(),
            json!({"foo": 1}),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("cannot tell the format from the columns `foo`"),
            "{e}"
        );
        assert!(e.contains("hint: set `format`"), "{e}");
    }

    #[test]
    fn dataset_info_entries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("dataset_info.json");
        std::fs::write(
            &p,
            r#"{"demo": {"file_name": "demo.json", "formatting": "sharegpt",
                         "columns": {"messages": "conversations", "system": "sys"},
                         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
                "dpo": {"file_name": "dpo.json", "ranking": true, "formatting": "sharegpt"},
                "hub": {"hf_hub_url": "org/name"}}"#,
        )
        .unwrap();
        let e = dataset_info_entry(&p, "data/dataset_info.json", "demo").unwrap();
        assert_eq!(e.file_name, "demo.json");
        assert_eq!(e.format, Format::Sharegpt);
        assert_eq!(e.columns.system.as_deref(), Some("sys"));
        assert_eq!(e.tags.user_tag.as_deref(), Some("user"));
        assert_eq!(
            dataset_info_entry(&p, "x", "dpo").unwrap().format,
            Format::Preference
        );
        let err = dataset_info_entry(&p, "x", "hub").unwrap_err().to_string();
        assert!(err.contains("is remote (`hf_hub_url`)"), "{err}");
        let err = dataset_info_entry(&p, "x", "dem").unwrap_err().to_string();
        assert!(
            err.contains("has no entry `dem`") && err.contains("`demo`"),
            "{err}"
        );
    }
}
