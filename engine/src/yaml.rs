//! A YAML tree that remembers where every value came from, and a serde deserializer over it whose errors
//! point at the offending value.
//!
//! Manifests are parsed with `yaml-rust2`'s event parser (which reports positions) into [`Node`]s. Plain
//! scalars are typed with the YAML 1.2 core schema. Typed parameters are then deserialized straight from
//! the nodes, so a wrong type or an unknown key comes back with the span of the value or key at fault.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// Nesting deeper than this is refused, so hostile input cannot exhaust the stack.
pub const MAX_DEPTH: usize = 64;
/// Alias expansion may not grow a document beyond this many nodes ("billion laughs").
pub const MAX_NODES: usize = 200_000;

/// A byte range in a source text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Span {
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

/// A YAML value with its position.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the value is written.
    pub span: Span,
    /// The value.
    pub value: Value,
    /// For scalars, the text as written (after unquoting).
    pub raw: Option<String>,
    /// Whether the scalar was quoted or a block (such scalars are always strings).
    pub quoted: bool,
}

/// The value of a [`Node`].
#[derive(Clone, Debug)]
pub enum Value {
    /// `~`, `null` or nothing.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// Moves every span of this tree `by` bytes later.
    fn shift_spans(&mut self, by: usize) {
        self.span.start += by;
        self.span.end += by;
        match &mut self.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| n.shift_spans(by)),
            Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.shift_spans(by);
                v.shift_spans(by);
            }),
            _ => {}
        }
    }
}

impl Node {
    /// The entries of a mapping, if this is one.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.value {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The text of a scalar (any scalar type), if this is one.
    pub fn as_scalar_text(&self) -> Option<&str> {
        self.raw.as_deref()
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_scalar_text() == Some(key))
            .map(|(_, v)| v)
    }

    /// A short word for the kind of value, for messages.
    pub fn type_name(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }

    /// Converts to JSON (mapping keys become their text).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match &self.value {
            Value::Null => J::Null,
            Value::Bool(b) => J::Bool(*b),
            Value::Int(i) => J::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
            Value::Str(s) => J::String(s.clone()),
            Value::Seq(items) => J::Array(items.iter().map(Node::to_json).collect()),
            Value::Map(entries) => J::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.raw.clone().unwrap_or_default(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Visits every string scalar, mutably, with its span.
    pub fn for_each_string_mut(&mut self, f: &mut dyn FnMut(&mut Node)) {
        match &mut self.value {
            Value::Str(_) => f(self),
            Value::Seq(items) => items.iter_mut().for_each(|n| n.for_each_string_mut(f)),
            Value::Map(entries) => entries
                .iter_mut()
                .for_each(|(_, v)| v.for_each_string_mut(f)),
            _ => {}
        }
    }
}

/// A YAML syntax error.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// Where.
    pub span: Span,
    /// What.
    pub message: String,
}

/// Parses `src`, which must hold one document (a second `---` document is an error). An empty
/// document is `Null`. A UTF-8 byte order mark at the start is skipped; spans still count it, so they
/// point into `src` as the user's file has it.
pub fn parse(src: &str) -> Result<Node, SyntaxError> {
    const BOM: char = '\u{feff}';
    match src.strip_prefix(BOM) {
        Some(rest) => parse_document(rest)
            .map(|mut node| {
                node.shift_spans(BOM.len_utf8());
                node
            })
            .map_err(|mut e| {
                e.span.start += BOM.len_utf8();
                e.span.end += BOM.len_utf8();
                e
            }),
        None => parse_document(src),
    }
}

fn parse_document(src: &str) -> Result<Node, SyntaxError> {
    let offsets = CharOffsets::new(src);
    let mut builder = Builder {
        src,
        offsets: &offsets,
        stack: Vec::new(),
        anchors: Vec::new(),
        root: None,
        error: None,
        nodes: 0,
        docs: 0,
    };
    let mut parser = Parser::new_from_str(src);
    // Every document is read, so that a second one is reported instead of silently ignored.
    if let Err(e) = parser.load(&mut builder, true) {
        let at = offsets.byte(e.marker().index());
        return Err(SyntaxError {
            span: Span {
                start: at,
                end: next_char_end(src, at),
            },
            message: e.info().to_string(),
        });
    }
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        span: Span::default(),
        value: Value::Null,
        raw: Some(String::new()),
        quoted: false,
    }))
}

fn next_char_end(src: &str, at: usize) -> usize {
    src[at.min(src.len())..]
        .chars()
        .next()
        .map_or(at.min(src.len()), |c| at + c.len_utf8())
}

/// Maps yaml-rust2's character indices to byte offsets.
struct CharOffsets {
    bytes: Vec<usize>,
    len: usize,
}

impl CharOffsets {
    fn new(src: &str) -> CharOffsets {
        CharOffsets {
            bytes: src.char_indices().map(|(b, _)| b).collect(),
            len: src.len(),
        }
    }

    fn byte(&self, char_index: usize) -> usize {
        self.bytes.get(char_index).copied().unwrap_or(self.len)
    }
}

enum Frame {
    Seq {
        start: Marker,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Marker,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
}

struct Builder<'a> {
    src: &'a str,
    offsets: &'a CharOffsets,
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    nodes: usize,
    docs: usize,
}

impl Builder<'_> {
    fn fail(&mut self, mark: Marker, message: String) {
        if self.error.is_none() {
            let at = self.offsets.byte(mark.index());
            self.error = Some(SyntaxError {
                span: Span {
                    start: at,
                    end: next_char_end(self.src, at),
                },
                message,
            });
        }
    }

    fn push_node(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                if self.root.is_none() {
                    self.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    /// The end of the source text that a scalar starting at `start` spans.
    fn scalar_end(&self, start: usize, value: &str, style: TScalarStyle) -> usize {
        let rest = &self.src[start.min(self.src.len())..];
        let line_end = rest.find('\n').unwrap_or(rest.len());
        let end = match style {
            TScalarStyle::Plain if rest.starts_with(value) && !value.is_empty() => value.len(),
            TScalarStyle::DoubleQuoted => closing_quote(rest, '"').unwrap_or(line_end),
            TScalarStyle::SingleQuoted => closing_quote(rest, '\'').unwrap_or(line_end),
            _ => rest[..line_end].trim_end().len().max(1),
        };
        (start + end).min(self.src.len())
    }

    fn collection_span(&self, start: Marker) -> Span {
        let s = self.offsets.byte(start.index());
        let rest = &self.src[s.min(self.src.len())..];
        let line = &rest[..rest.find('\n').unwrap_or(rest.len())];
        let line = line.split(" #").next().unwrap_or(line).trim_end();
        Span {
            start: s,
            end: s + line.len().max(1).min(rest.len()),
        }
    }
}

fn closing_quote(rest: &str, quote: char) -> Option<usize> {
    let mut chars = rest.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        if quote == '"' && c == '\\' {
            chars.next();
        } else if c == quote {
            if quote == '\'' && rest[i + 1..].starts_with('\'') {
                chars.next();
                continue;
            }
            return Some(i + 1);
        }
    }
    None
}

impl MarkedEventReceiver for Builder<'_> {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::DocumentStart => {
                self.docs += 1;
                if self.docs > 1 {
                    self.fail(
                        mark,
                        "a manifest holds one YAML document; found a second `---`".into(),
                    );
                }
            }
            Event::Scalar(text, style, anchor, tag) => {
                self.nodes += 1;
                let start = self.offsets.byte(mark.index());
                let end = self.scalar_end(start, &text, style);
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let quoted = style != TScalarStyle::Plain || is_str_tag;
                let value = if quoted {
                    Value::Str(text.clone())
                } else {
                    resolve_plain(&text)
                };
                let node = Node {
                    span: Span { start, end },
                    value,
                    raw: Some(text),
                    quoted,
                };
                if anchor > 0 {
                    self.anchors.push((anchor, node.clone()));
                }
                self.push_node(node);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                self.nodes += 1;
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(mark, format!("nesting deeper than {MAX_DEPTH} levels"));
                    return;
                }
                let frame = if matches!(ev, Event::SequenceStart(..)) {
                    Frame::Seq {
                        start: mark,
                        anchor,
                        items: Vec::new(),
                    }
                } else {
                    Frame::Map {
                        start: mark,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    }
                };
                self.stack.push(frame);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return;
                };
                let (start, anchor, value) = match frame {
                    Frame::Seq {
                        start,
                        anchor,
                        items,
                    } => (start, anchor, Value::Seq(items)),
                    Frame::Map {
                        start,
                        anchor,
                        entries,
                        ..
                    } => (start, anchor, Value::Map(entries)),
                };
                let node = Node {
                    span: self.collection_span(start),
                    value,
                    raw: None,
                    quoted: false,
                };
                if anchor > 0 {
                    self.anchors.push((anchor, node.clone()));
                }
                self.push_node(node);
            }
            Event::Alias(id) => {
                let Some(node) = self
                    .anchors
                    .iter()
                    .rev()
                    .find(|(a, _)| *a == id)
                    .map(|(_, n)| n.clone())
                else {
                    self.fail(mark, "alias to an unknown anchor".into());
                    return;
                };
                self.nodes += count_nodes(&node);
                if self.nodes > MAX_NODES {
                    self.fail(
                        mark,
                        format!("aliases expand the document beyond {MAX_NODES} values"),
                    );
                    return;
                }
                self.push_node(node);
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {}
        }
    }
}

fn count_nodes(node: &Node) -> usize {
    1 + match &node.value {
        Value::Seq(items) => items.iter().map(count_nodes).sum(),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| count_nodes(k) + count_nodes(v))
            .sum(),
        _ => 0,
    }
}

/// Types a plain scalar with the YAML 1.2 core schema.
pub fn resolve_plain(text: &str) -> Value {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(i) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(i);
    }
    if let Some(oct) = text.strip_prefix("0o")
        && let Ok(i) = i64::from_str_radix(oct, 8)
    {
        return Value::Int(i);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = text.parse::<i64>() {
            return Value::Int(i);
        }
        if let Ok(f) = text.parse::<f64>() {
            return Value::Float(f);
        }
    }
    if is_core_float(digits)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?` without the sign.
fn is_core_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (int.is_empty() && !frac.is_empty() || !int.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    mantissa_ok && exponent_ok
}

/// A deserialization error, with the span of the value at fault when known.
#[derive(Debug, Clone)]
pub struct DeError {
    /// The message, serde style ("invalid type: ...").
    pub message: String,
    /// Where.
    pub span: Option<Span>,
    /// For an unknown key: the key and the keys that are allowed.
    pub unknown_field: Option<(String, Vec<&'static str>)>,
}

impl DeError {
    fn at(mut self, span: Span) -> DeError {
        self.span.get_or_insert(span);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            message: msg.to_string(),
            span: None,
            unknown_field: None,
        }
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        DeError {
            message: format!("unknown key `{field}`"),
            span: None,
            unknown_field: Some((field.to_string(), expected.to_vec())),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        DeError::custom(format_args!("missing key `{field}`"))
    }
}

impl Node {
    /// An integer literal too large for 64 bits reads as a float; where a float is not wanted, say so
    /// rather than "invalid type: floating point".
    fn too_large(&self, e: DeError) -> DeError {
        let integer = self.raw.as_deref().is_some_and(|raw| {
            let digits = raw.strip_prefix(['-', '+']).unwrap_or(raw);
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        });
        match e.message.strip_prefix("invalid type: floating point") {
            Some(rest) if integer => {
                let expected = rest.split_once(", ").map_or("", |(_, x)| x);
                DeError {
                    message: format!(
                        "the integer {} is out of range, {expected}",
                        self.raw.as_deref().unwrap_or_default()
                    ),
                    ..e
                }
            }
            _ => e,
        }
    }
}

/// Deserializes a `T` from a node; errors carry the span of the value at fault.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    T::deserialize(node).map_err(|e| e.at(node.span))
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let result = match &self.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => visitor.visit_i64(*i),
            Value::Float(f) => visitor.visit_f64(*f).map_err(|e| self.too_large(e)),
            Value::Str(s) => visitor.visit_borrowed_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAccess {
                items: items.iter(),
            }),
            Value::Map(entries) => visitor.visit_map(MapAccess {
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(self.span))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e| e.at(self.span))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // Any scalar reads as a string where a string is expected (`revision: 1234` is the text "1234").
        match (&self.value, &self.raw) {
            (Value::Str(s), _) => visitor.visit_borrowed_str(s),
            (Value::Null, _) => self.deserialize_any(visitor),
            (Value::Seq(_) | Value::Map(_), _) | (_, None) => self.deserialize_any(visitor),
            (_, Some(raw)) => visitor.visit_borrowed_str(raw),
        }
        .map_err(|e| e.at(self.span))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(self.span))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.value {
            Value::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Value::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumAccess {
                key: &entries[0].0,
                value: &entries[0].1,
            }),
            _ => Err(de::Error::custom(format_args!(
                "expected a name or a one-key mapping, found {}",
                self.type_name()
            ))),
        }
        .map_err(|e| e.at(self.span))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit_struct seq tuple tuple_struct map struct ignored_any
    }
}

impl<'de> IntoDeserializer<'de, DeError> for &'de Node {
    type Deserializer = &'de Node;

    fn into_deserializer(self) -> Self::Deserializer {
        self
    }
}

struct SeqAccess<'de> {
    items: std::slice::Iter<'de, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(node) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.at(node.span)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'de> {
    entries: std::slice::Iter<'de, (Node, Node)>,
    value: Option<&'de Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(key).map(Some).map_err(|e| e.at(key.span))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let value = self
            .value
            .take()
            .ok_or_else(|| <DeError as de::Error>::custom("value without a key"))?;
        seed.deserialize(value).map_err(|e| e.at(value.span))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct EnumAccess<'de> {
    key: &'de Node,
    value: &'de Node,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = VariantAccess<'de>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), DeError> {
        let variant = seed
            .deserialize(self.key)
            .map_err(|e| e.at(self.key.span))?;
        Ok((variant, VariantAccess { value: self.value }))
    }
}

struct VariantAccess<'de> {
    value: &'de Node,
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        de::Deserialize::deserialize(self.value)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self.value)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(self.value, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_map(self.value, visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        lr: f64,
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn text_at(src: &str, span: Span) -> &str {
        &src[span.start..span.end]
    }

    #[test]
    fn a_byte_order_mark_is_skipped_and_spans_still_point_into_the_file() {
        let src = "\u{feff}name: demo\nsteps: {}\n";
        let node = parse(src).unwrap();
        let map = node.as_map().unwrap();
        assert_eq!(map[0].0.as_scalar_text(), Some("name"));
        assert_eq!(text_at(src, map[0].0.span), "name");
        assert_eq!(text_at(src, map[0].1.span), "demo");
        let err = parse("\u{feff}a: [1\n").unwrap_err();
        assert!(err.span.start >= 3, "{err:?}");
    }

    #[test]
    fn a_second_document_is_an_error_at_its_start() {
        let src = "name: one\nsteps: {}\n---\nname: two\n";
        let err = parse(src).unwrap_err();
        assert!(
            err.message.contains("found a second `---`"),
            "{}",
            err.message
        );
        assert_eq!(&src[err.span.start..err.span.start + 3], "---");
        // One document, with an explicit start and end, is fine.
        assert!(parse("---\nname: one\n...\n").is_ok());
    }

    #[test]
    fn core_schema_types() {
        assert!(matches!(resolve_plain("1e-4"), Value::Float(f) if f == 1e-4));
        assert!(matches!(resolve_plain("2.0"), Value::Float(_)));
        assert!(matches!(resolve_plain("-12"), Value::Int(-12)));
        assert!(matches!(resolve_plain("0x1f"), Value::Int(31)));
        assert!(matches!(resolve_plain("yes"), Value::Str(_)));
        assert!(matches!(resolve_plain("~"), Value::Null));
        assert!(matches!(resolve_plain("1.2.3"), Value::Str(_)));
        assert!(matches!(resolve_plain("e5"), Value::Str(_)));
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        let src = "lr: fast\nname: x\n";
        let node = parse(src).unwrap();
        let err = from_node::<Params>(&node).unwrap_err();
        assert_eq!(text_at(src, err.span.unwrap()), "fast");
        assert!(err.message.contains("invalid type"), "{}", err.message);
    }

    #[test]
    fn unknown_key_points_at_the_key_and_lists_expected() {
        let src = "lr: 1e-4\nnmae: x\n";
        let node = parse(src).unwrap();
        let err = from_node::<Params>(&node).unwrap_err();
        assert_eq!(text_at(src, err.span.unwrap()), "nmae");
        let (field, expected) = err.unknown_field.unwrap();
        assert_eq!(field, "nmae");
        assert!(expected.contains(&"name"));
    }

    #[test]
    fn nested_error_points_inside_the_list() {
        let src = "lr: 1\ntags: [a, {b: c}]\n";
        let node = parse(src).unwrap();
        let err = from_node::<Params>(&node).unwrap_err();
        assert!(text_at(src, err.span.unwrap()).starts_with('{'));
    }

    #[test]
    fn quoted_numbers_stay_strings_and_scalars_read_as_strings() {
        let node = parse("lr: 3\nname: 0012\n").unwrap();
        let p: Params = from_node(&node).unwrap();
        assert_eq!(p.name.as_deref(), Some("0012"));
        let node = parse("lr: '3'\n").unwrap();
        assert!(from_node::<Params>(&node).is_err());
    }

    #[test]
    fn spans_of_quoted_and_unicode_scalars() {
        let src = "a: \"안녕 \\\" x\"\nb: 'it''s'\nc: 한글\n";
        let node = parse(src).unwrap();
        let map = node.as_map().unwrap();
        assert_eq!(text_at(src, map[0].1.span), "\"안녕 \\\" x\"");
        assert_eq!(text_at(src, map[1].1.span), "'it''s'");
        assert_eq!(text_at(src, map[2].1.span), "한글");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let src = "a: [1, 2\nb: 3\n";
        let err = parse(src).unwrap_err();
        assert!(err.span.start <= src.len());
    }

    #[test]
    fn deep_nesting_and_alias_bombs_are_refused() {
        let deep = "[".repeat(500);
        assert!(parse(&deep).is_err());
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = if i == 0 {
                "a".to_string()
            } else {
                format!("l{}", i - 1)
            };
            bomb.push_str(&format!(
                "l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(err.message.contains("aliases"), "{}", err.message);
    }

    #[test]
    fn aliases_expand() {
        let node = parse("base: &b {lr: 1}\nother: *b\n").unwrap();
        assert_eq!(
            node.get("other").unwrap().to_json(),
            serde_json::json!({"lr": 1})
        );
    }
}
