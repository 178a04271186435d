//! Training a byte-level BPE tokenizer on text and writing it as a Hugging Face tokenizer folder with
//! a chat template (the `tokenizer` kind's library).

use std::path::Path;

use anyhow::Context as _;
use lf_schemas::kinds::TokenizerParams;
use lf_schemas::kinds::dataset::TemplateName;
use serde_json::{Map, Value as Json, json};
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer, TokenizerBuilder};

use crate::data::chat::builtin as builtin_template;
use crate::data::files::{FileKind, Several, find, read_rows};

/// The special token every trained tokenizer has (id 0): it separates documents and pads.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// The texts of a source: whole text files, and every string of data rows.
pub fn training_texts(
    source: &str,
    input: Option<&Path>,
    file: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let mut texts = Vec::new();
    for f in find(source, input, file, Several::All)? {
        if f.kind == FileKind::Text {
            texts.push(f.text()?.into_owned());
            continue;
        }
        for row in read_rows(&f)? {
            collect_strings(&row.value, &mut texts);
        }
    }
    anyhow::ensure!(
        texts.iter().any(|t| !t.trim().is_empty()),
        "`{source}` holds no text to train on"
    );
    Ok(texts)
}

fn collect_strings(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::String(s) => out.push(s.clone()),
        Json::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Json::Object(map) => map.values().for_each(|i| collect_strings(i, out)),
        _ => {}
    }
}

/// The special tokens of a tokenizer trained for `template`, in id order.
pub fn special_tokens(template: TemplateName, extra: &[String]) -> Vec<String> {
    let mut out = vec![ENDOFTEXT.to_string()];
    if let Some(b) = builtin_template(template) {
        out.extend(b.specials.iter().map(|s| s.to_string()));
    }
    out.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    out.retain(|s| seen.insert(s.clone()));
    out
}

/// Trains and writes `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` into
/// `out`; returns the vocabulary size.
pub fn train(p: &TokenizerParams, texts: &[String], out: &Path) -> anyhow::Result<usize> {
    let template = builtin_template(p.template).context("a built-in template is needed")?;
    let specials = special_tokens(p.template, &p.special_tokens);
    let added: Vec<AddedToken> = specials
        .iter()
        .map(|s| AddedToken::from(s.clone(), true))
        .collect();
    let mut trainer = BpeTrainer::builder()
        .vocab_size(p.vocab_size)
        .min_frequency(p.min_frequency)
        .show_progress(false)
        .special_tokens(added)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tokenizer = TokenizerBuilder::<BPE, _, ByteLevel, ByteLevel, ByteLevel>::new()
        .with_model(BPE::default())
        .with_normalizer(None::<tokenizers::normalizers::NormalizerWrapper>)
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_post_processor(Some(ByteLevel::new(false, false, true)))
        .with_decoder(Some(ByteLevel::default()))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the tokenizer: {e}"))?;
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow::anyhow!("training the tokenizer failed: {e}"))?;
    let tokenizer: Tokenizer = tokenizer.into();
    let json = tokenizer
        .to_string(true)
        .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
    std::fs::write(out.join("tokenizer.json"), json + "\n")?;

    let eos = template.eos.to_string();
    let eos = if specials.contains(&eos) {
        eos
    } else {
        ENDOFTEXT.to_string()
    };
    let bos = template.bos.map(str::to_string);
    let mut decoder = Map::new();
    for s in &specials {
        let id = tokenizer
            .token_to_id(s)
            .with_context(|| format!("special token `{s}` is not in the vocabulary"))?;
        decoder.insert(
            id.to_string(),
            json!({"content": s, "lstrip": false, "normalized": false, "rstrip": false,
                   "single_word": false, "special": true}),
        );
    }
    let config = json!({
        "add_bos_token": false,
        "add_eos_token": false,
        "added_tokens_decoder": decoder,
        "bos_token": bos,
        "chat_template": template.source,
        "clean_up_tokenization_spaces": false,
        "eos_token": eos,
        "pad_token": ENDOFTEXT,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": null,
    });
    std::fs::write(
        out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    let mut map = Map::new();
    if let Some(b) = &bos {
        map.insert("bos_token".into(), json!(b));
    }
    map.insert("eos_token".into(), json!(eos));
    map.insert("pad_token".into(), json!(ENDOFTEXT));
    let extra: Vec<&String> = specials
        .iter()
        .filter(|s| **s != eos && Some(*s) != bos.as_ref() && *s != ENDOFTEXT)
        .collect();
    if !extra.is_empty() {
        map.insert("additional_special_tokens".into(), json!(extra));
    }
    std::fs::write(
        out.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&Json::Object(map))? + "\n",
    )?;
    Ok(tokenizer.get_vocab_size(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::tokenizer::ModelTokenizer;

    fn params() -> TokenizerParams {
        TokenizerParams {
            source: "builtin:corpus".into(),
            file: None,
            vocab_size: 1024,
            min_frequency: 2,
            special_tokens: vec!["<|tool|>".into()],
            template: TemplateName::Chatml,
        }
    }

    #[test]
    fn training_is_deterministic_and_the_folder_loads() {
        let texts = training_texts("builtin:corpus", None, None).unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let n = train(&params(), &texts, a.path()).unwrap();
        assert_eq!(n, 1024);
        train(&params(), &texts, b.path()).unwrap();
        for f in [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
        ] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f} differs between two trainings"
            );
        }
        let tok = ModelTokenizer::load(a.path()).unwrap();
        assert_eq!(tok.tokenizer.token_to_id(ENDOFTEXT), Some(0));
        assert_eq!(tok.tokenizer.token_to_id("<|im_start|>"), Some(1));
        assert_eq!(tok.tokenizer.token_to_id("<|im_end|>"), Some(2));
        assert_eq!(tok.tokenizer.token_to_id("<|tool|>"), Some(3));
        assert_eq!(tok.eos_id, Some(2));
        assert_eq!(tok.pad_id, 0);
        // Byte-level: any text round-trips, special tokens stay whole.
        let text = "<|im_start|>user\nHello, 서울 🙂!<|im_end|>";
        let ids = tok
            .tokenizer
            .encode(text, false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(ids[0], 1);
        assert_eq!(tok.tokenizer.decode(&ids, false).unwrap(), text);
        assert!(tok.chat_template.unwrap().contains("<|im_start|>"));
    }
}
