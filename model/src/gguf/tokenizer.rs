//! A `tokenizers::Tokenizer` rebuilt from GGUF metadata (`tokenizer.ggml.*`), plus the chat
//! template and special tokens, bundled as [`TokenizerBundle`]; also read from HF directories.
//!
//! The construction follows transformers' GGUF converter (`integrations/gguf/gguf_tokenizer_mapping.py`),
//! the reference the goldens come from:
//! - `gpt2`: byte-level BPE from `tokens` + `merges`; tokens not spelled in the byte alphabet are
//!   re-spelled; the pre-tokenizer is GPT-2's byte-level regex, or a `Split` with the regex of
//!   `tokenizer.ggml.pre` when that names a known family (llama3, qwen2, ...).
//! - `llama`: SentencePiece-style BPE with byte fallback; merges derived from the token scores;
//!   `Metaspace` pre-tokenizer (prepend on the first piece) and the matching decoder.
//!
//! Tokens typed CONTROL become special added tokens, USER_DEFINED ones plain added tokens.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer,
};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufValue};

/// GGUF token types.
const TOKEN_CONTROL: i64 = 3;
const TOKEN_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The split regex for a `tokenizer.ggml.pre` value, when it differs from GPT-2's.
fn pre_split(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe" => {
            LLAMA3_SPLIT
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => QWEN2_SPLIT,
        "gpt-4o" | "llama4" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// A tokenizer with what a chat front end needs around it.
#[derive(Debug, Clone)]
pub struct TokenizerBundle {
    /// The tokenizer (its post-processor adds BOS when the model wants one).
    pub tokenizer: Tokenizer,
    /// The Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
    /// BOS token text.
    pub bos_token: Option<String>,
    /// EOS token text.
    pub eos_token: Option<String>,
    /// Padding token text.
    pub pad_token: Option<String>,
    /// Unknown token text.
    pub unk_token: Option<String>,
    /// BOS id.
    pub bos_id: Option<u32>,
    /// Ids that end generation (EOS and, from `generation_config.json`, its extra EOS ids).
    pub eos_ids: Vec<u32>,
    /// Padding id.
    pub pad_id: Option<u32>,
    /// Whether encoding with special tokens prepends BOS.
    pub add_bos: bool,
    /// Every special (control) token text.
    pub special_tokens: Vec<String>,
}

impl TokenizerBundle {
    /// Token ids of `text`; `add_special` applies the post-processor (BOS when `add_bos`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Text of `ids`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Reads `tokenizer.json`, `tokenizer_config.json` (chat template, special tokens, BOS flag),
    /// `chat_template.jinja` and `generation_config.json` (extra EOS ids) from a HF directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            return Err(Error::Tokenizer(format!(
                "`{}` has no `tokenizer.json`",
                dir.display()
            )));
        }
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("`{}`: {e}", tok_path.display())))?;
        let read_json = |name: &str| -> Result<Option<serde_json::Value>> {
            let p = dir.join(name);
            if !p.is_file() {
                return Ok(None);
            }
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
            serde_json::from_str(&text)
                .map(Some)
                .map_err(|source| Error::Json { path: p, source })
        };
        let cfg = read_json("tokenizer_config.json")?.unwrap_or(serde_json::Value::Null);
        let token_text = |key: &str| -> Option<String> {
            match cfg.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        let jinja = dir.join("chat_template.jinja");
        let chat_template = if jinja.is_file() {
            Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
        } else {
            match cfg.get("chat_template") {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Array(list)) => list
                    .iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                    .or_else(|| list.first())
                    .and_then(|t| t.get("template"))
                    .and_then(|t| t.as_str())
                    .map(str::to_owned),
                _ => None,
            }
        };
        let bos_token = token_text("bos_token");
        let eos_token = token_text("eos_token");
        let pad_token = token_text("pad_token");
        let unk_token = token_text("unk_token");
        let id_of = |t: &Option<String>| t.as_deref().and_then(|t| tokenizer.token_to_id(t));
        let mut eos_ids: Vec<u32> = id_of(&eos_token).into_iter().collect();
        if let Some(generation) = read_json("generation_config.json")? {
            match generation.get("eos_token_id") {
                Some(serde_json::Value::Array(a)) => {
                    eos_ids.extend(a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32))
                }
                Some(v) => eos_ids.extend(v.as_u64().map(|v| v as u32)),
                None => {}
            }
        }
        eos_ids.dedup();
        let mut seen = std::collections::HashSet::new();
        eos_ids.retain(|id| seen.insert(*id));
        let special_tokens = tokenizer
            .get_added_tokens_decoder()
            .values()
            .filter(|t| t.special)
            .map(|t| t.content.clone())
            .collect();
        Ok(TokenizerBundle {
            bos_id: id_of(&bos_token),
            pad_id: id_of(&pad_token),
            add_bos: cfg
                .get("add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            tokenizer,
            chat_template,
            bos_token,
            eos_token,
            pad_token,
            unk_token,
            eos_ids,
            special_tokens,
        })
    }
}

/// GPT-2's map from bytes to the printable characters byte-level BPE spells them with.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\0')
        };
    }
    out
}

fn string_array(file: &GgufFile, key: &str) -> Result<Option<Vec<String>>> {
    match file.meta(key) {
        None => Ok(None),
        Some(GgufValue::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| Error::gguf(format!("`{key}` must be an array of strings")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::gguf(format!("`{key}` must be an array"))),
    }
}

fn number_array(file: &GgufFile, key: &str) -> Result<Option<Vec<f64>>> {
    match file.meta(key) {
        None => Ok(None),
        Some(GgufValue::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| Error::gguf(format!("`{key}` must be an array of numbers")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(_) => Err(Error::gguf(format!("`{key}` must be an array"))),
    }
}

/// Merges implied by a SentencePiece vocabulary and its scores (transformers' `generate_merges`):
/// every split of a token into two vocabulary pieces, best score first.
fn merges_from_scores(tokens: &[String], scores: &[f64]) -> Vec<(String, String)> {
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(String, String, f64)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (token, &score) in tokens.iter().zip(scores) {
        if !seen.insert(token.as_str()) {
            continue;
        }
        let mut local = Vec::new();
        for (idx, _) in token.char_indices().skip(1) {
            let (l, r) = token.split_at(idx);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                local.push((il, ir, l, r));
            }
        }
        local.sort_by_key(|&(il, ir, _, _)| (il, ir));
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (l.to_owned(), r.to_owned(), score)),
        );
    }
    // Stable sort, descending by (score, len(left), len(right)), as Python's sort(reverse=True).
    merges.sort_by(|a, b| {
        let ka = (a.2, a.0.chars().count(), a.1.chars().count());
        let kb = (b.2, b.0.chars().count(), b.1.chars().count());
        kb.partial_cmp(&ka).unwrap_or(std::cmp::Ordering::Equal)
    });
    merges.into_iter().map(|(l, r, _)| (l, r)).collect()
}

/// Builds the tokenizer, chat template and special tokens a GGUF file describes.
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<TokenizerBundle> {
    let model = file
        .meta_str("tokenizer.ggml.model")
        .ok_or_else(|| Error::gguf("missing `tokenizer.ggml.model`"))?;
    let tokens = string_array(file, "tokenizer.ggml.tokens")?
        .ok_or_else(|| Error::gguf("missing `tokenizer.ggml.tokens`"))?;
    let types: Vec<i64> = match file.meta("tokenizer.ggml.token_type") {
        Some(GgufValue::Array(a)) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
        _ => vec![1; tokens.len()],
    };
    let id = |key: &str| {
        file.meta_u64(&format!("tokenizer.ggml.{key}"))
            .map(|v| v as u32)
    };
    let token_at = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned());
    let (bos_id, eos_id, unk_id, pad_id) = (
        id("bos_token_id"),
        id("eos_token_id"),
        id("unknown_token_id"),
        id("padding_token_id"),
    );
    let add_bos = file
        .meta_bool("tokenizer.ggml.add_bos_token")
        .unwrap_or(model == "llama");

    let tok_err = |e: Box<dyn std::error::Error + Send + Sync>| Error::Tokenizer(e.to_string());
    let mut special_tokens = Vec::new();
    let mut tokenizer = match model {
        "gpt2" => {
            let spelling = bytes_to_unicode();
            let alphabet: std::collections::HashSet<char> = spelling.iter().copied().collect();
            let mut vocab = Vocab::default();
            for (i, t) in tokens.iter().enumerate() {
                let spelled = if t.chars().all(|c| alphabet.contains(&c)) {
                    t.clone()
                } else {
                    t.bytes().map(|b| spelling[b as usize]).collect()
                };
                vocab.entry(spelled).or_insert(i as u32);
            }
            let merges = string_array(file, "tokenizer.ggml.merges")?
                .ok_or_else(|| Error::gguf("byte-level BPE without `tokenizer.ggml.merges`"))?
                .into_iter()
                .map(|m| match m.split_once(' ') {
                    Some((l, r)) => Ok((l.to_owned(), r.to_owned())),
                    None => Err(Error::gguf(format!("malformed merge `{m}`"))),
                })
                .collect::<Result<Vec<_>>>()?;
            let bpe = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .build()
                .map_err(tok_err)?;
            let mut tk = Tokenizer::new(bpe);
            let pre = file.meta_str("tokenizer.ggml.pre").unwrap_or("default");
            match pre_split(pre) {
                Some(regex) => {
                    let split = Split::new(
                        SplitPattern::Regex(regex.to_owned()),
                        SplitDelimiterBehavior::Isolated,
                        false,
                    )
                    .map_err(tok_err)?;
                    tk.with_pre_tokenizer(Some(PreSequence::new(vec![
                        PreTokenizerWrapper::Split(split),
                        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                    ])));
                }
                None => {
                    tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
                }
            }
            tk.with_decoder(Some(ByteLevel::new(true, true, true)));
            tk
        }
        "llama" => {
            let scores = number_array(file, "tokenizer.ggml.scores")?.ok_or_else(|| {
                Error::gguf("SentencePiece vocabulary without `tokenizer.ggml.scores`")
            })?;
            if scores.len() != tokens.len() {
                return Err(Error::gguf(
                    "`tokenizer.ggml.scores` and `tokenizer.ggml.tokens` differ in length",
                ));
            }
            let merges = merges_from_scores(&tokens, &scores);
            let mut vocab = Vocab::default();
            for (i, t) in tokens.iter().enumerate() {
                vocab.entry(t.clone()).or_insert(i as u32);
            }
            let mut builder = BPE::builder()
                .vocab_and_merges(vocab, merges)
                .byte_fallback(true)
                .fuse_unk(true);
            if let Some(unk) = token_at(unk_id) {
                builder = builder.unk_token(unk);
            }
            let bpe = builder.build().map_err(tok_err)?;
            let mut tk = Tokenizer::new(bpe);
            let add_prefix = file
                .meta_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(true);
            let scheme = if add_prefix {
                PrependScheme::First
            } else {
                PrependScheme::Never
            };
            tk.with_pre_tokenizer(Some(Metaspace::new('\u{2581}', scheme, false)));
            let mut decoders = vec![
                DecoderWrapper::Replace(Replace::new("\u{2581}", " ").map_err(tok_err)?),
                DecoderWrapper::ByteFallback(ByteFallback::new()),
                DecoderWrapper::Fuse(Fuse::new()),
            ];
            if add_prefix {
                decoders.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
            }
            tk.with_decoder(Some(DecoderSequence::new(decoders)));
            tk
        }
        other => {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model `{other}`; supported: `gpt2` (byte-level BPE), `llama` (SentencePiece)"
            )));
        }
    };

    // Control tokens become special added tokens. In a byte-level vocabulary a control token
    // spelled outside the byte alphabet is a llama.cpp mislabel and is skipped, as transformers does.
    let alphabet: Option<std::collections::HashSet<char>> =
        (model == "gpt2").then(|| bytes_to_unicode().iter().copied().collect());
    let control: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(t, ty)| {
            **ty == TOKEN_CONTROL
                && alphabet
                    .as_ref()
                    .is_none_or(|a| t.chars().all(|c| a.contains(&c)))
        })
        .map(|(t, _)| {
            special_tokens.push(t.clone());
            AddedToken::from(t.clone(), true).normalized(false)
        })
        .collect();
    tokenizer.add_special_tokens(&control);
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, ty)| **ty == TOKEN_USER_DEFINED)
        .map(|(t, _)| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    tokenizer.add_tokens(&user);

    if add_bos && let (Some(bos), Some(bid)) = (token_at(bos_id), bos_id) {
        let post = TemplateProcessing::builder()
            .try_single(format!("{bos}:0 $A:0"))
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .try_pair(format!("{bos}:0 $A:0 {bos}:1 $B:1"))
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .special_tokens(vec![(bos.clone(), bid)])
            .build()
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_post_processor(Some(post));
    }

    Ok(TokenizerBundle {
        tokenizer,
        chat_template: file.meta_str("tokenizer.chat_template").map(str::to_owned),
        bos_token: token_at(bos_id),
        eos_token: token_at(eos_id),
        pad_token: token_at(pad_id),
        unk_token: token_at(unk_id),
        bos_id,
        eos_ids: eos_id.into_iter().collect(),
        pad_id,
        add_bos,
        special_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write_gguf;

    fn s(x: &str) -> GgufValue {
        GgufValue::String(x.into())
    }

    #[test]
    fn sentencepiece_vocab_with_scores() {
        // A toy SentencePiece vocabulary: byte tokens, pieces, and merges implied by the scores.
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![2i32, 3, 3];
        let mut scores = vec![0.0f32, 0.0, 0.0];
        for b in 0..256 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
            scores.push(0.0);
        }
        for (t, sc) in [
            ("▁", -1.0),
            ("h", -2.0),
            ("e", -3.0),
            ("l", -4.0),
            ("o", -5.0),
            ("he", -6.0),
            ("ll", -7.0),
            ("▁he", -8.0),
            ("llo", -9.0),
            ("▁hello", -10.0),
        ] {
            tokens.push(t.into());
            types.push(1);
            scores.push(sc);
        }
        let meta = vec![
            ("tokenizer.ggml.model".to_string(), s("llama")),
            (
                "tokenizer.ggml.tokens".into(),
                GgufValue::Array(tokens.iter().map(|t| s(t)).collect()),
            ),
            (
                "tokenizer.ggml.scores".into(),
                GgufValue::Array(scores.iter().map(|&x| GgufValue::F32(x)).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                GgufValue::Array(types.iter().map(|&x| GgufValue::I32(x)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id".into(), GgufValue::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), GgufValue::U32(2)),
            ("tokenizer.ggml.unknown_token_id".into(), GgufValue::U32(0)),
        ];
        let file = GgufFile::from_bytes(write_gguf(&meta, &[])).unwrap();
        let tb = tokenizer_from_gguf(&file).unwrap();
        assert!(tb.add_bos);
        let ids = tb.encode("hello", true).unwrap();
        let hello = tokens.iter().position(|t| t == "▁hello").unwrap() as u32;
        assert_eq!(ids, vec![1, hello]);
        // Unknown characters fall back to bytes: "é" is C3 A9.
        let ids = tb.encode("é", false).unwrap();
        let sp = tokens.iter().position(|t| t == "▁").unwrap() as u32;
        assert_eq!(ids, vec![sp, 3 + 0xC3, 3 + 0xA9]);
        assert_eq!(
            tb.decode(&tb.encode("hello é", false).unwrap(), true)
                .unwrap(),
            "hello é"
        );
        assert_eq!(tb.eos_ids, vec![2]);
        assert_eq!(
            tb.special_tokens,
            vec!["<s>".to_string(), "</s>".to_string()]
        );
    }
}
