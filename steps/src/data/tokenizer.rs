//! A model's tokenizer and special tokens, from a Hugging Face folder (`tokenizer.json`,
//! `tokenizer_config.json`, `chat_template.jinja`) or a GGUF file's metadata, and its fingerprint.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokenizers::Tokenizer;

use super::chat::TemplateTokens;
use lf_model::gguf::GgufFile;
use lf_model::{TokenizerBundle, tokenizer_from_gguf};

/// A model's tokenizer with its special tokens and chat template.
#[derive(Debug, Clone)]
pub struct ModelTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's own chat template, if it has one.
    pub chat_template: Option<String>,
    /// The special-token strings templates use.
    pub tokens: TemplateTokens,
    /// BOS id.
    pub bos_id: Option<u32>,
    /// EOS id.
    pub eos_id: Option<u32>,
    /// Padding id: the pad token's, else EOS's, else 0.
    pub pad_id: u32,
    /// Whether the model expects BOS before plain text (pretraining documents get one).
    pub adds_bos: bool,
    /// Every special token's text (added tokens marked special, and bos/eos/pad/unk).
    pub specials: Vec<String>,
    /// Where it was read from (`tokenizer.json` or the `.gguf` file name).
    pub origin: String,
}

impl ModelTokenizer {
    /// Loads the tokenizer of a model folder: `tokenizer.json` (with `tokenizer_config.json`) when
    /// present, else the folder's one `.gguf` file. `path` may also be a `.gguf` file.
    pub fn load(path: &Path) -> anyhow::Result<ModelTokenizer> {
        let (bundle, origin) = if path.is_dir() && path.join("tokenizer.json").is_file() {
            (
                TokenizerBundle::from_hf_dir(path)?,
                "tokenizer.json".to_string(),
            )
        } else {
            let file = gguf_file(path)?;
            let gguf = GgufFile::open(&file)?;
            let bundle = tokenizer_from_gguf(&gguf)
                .with_context(|| format!("cannot build a tokenizer from `{}`", file.display()))?;
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (bundle, name)
        };
        Ok(ModelTokenizer::from_bundle(bundle, origin))
    }

    fn from_bundle(b: TokenizerBundle, origin: String) -> ModelTokenizer {
        let id = |t: &Option<String>| t.as_deref().and_then(|t| b.tokenizer.token_to_id(t));
        let bos_id = b.bos_id.or_else(|| id(&b.bos_token));
        let eos_id = id(&b.eos_token).or_else(|| b.eos_ids.first().copied());
        let pad_id = b
            .pad_id
            .or_else(|| id(&b.pad_token))
            .or(eos_id)
            .unwrap_or(0);
        // BOS before text: the config says so, or the post-processor adds it.
        let adds_bos = b.add_bos
            || bos_id.is_some_and(|bos| {
                let with = b.tokenizer.encode("a", true).ok();
                let without = b.tokenizer.encode("a", false).ok();
                matches!((with, without), (Some(w), Some(wo))
                    if w.get_ids().first() == Some(&bos) && wo.get_ids().first() != Some(&bos))
            });
        let mut specials = b.special_tokens.clone();
        for t in [&b.bos_token, &b.eos_token, &b.pad_token, &b.unk_token]
            .into_iter()
            .flatten()
        {
            specials.push(t.clone());
        }
        specials.sort();
        specials.dedup();
        ModelTokenizer {
            tokens: TemplateTokens {
                bos: b.bos_token.clone(),
                eos: b.eos_token.clone(),
                pad: b.pad_token.clone(),
                unk: b.unk_token.clone(),
            },
            chat_template: b.chat_template.clone(),
            tokenizer: b.tokenizer,
            bos_id,
            eos_id,
            pad_id,
            adds_bos,
            specials,
            origin,
        }
    }

    /// blake3 (hex) of the tokenizer's canonical JSON: its `tokenizer.json` as the `tokenizers`
    /// crate writes it, with object keys sorted. Equal for the same vocabulary, merges, normalizer,
    /// pre-tokenizer and added tokens, however the file was formatted (or whether it came from GGUF).
    pub fn fingerprint(&self) -> anyhow::Result<String> {
        let text = self
            .tokenizer
            .to_string(false)
            .map_err(|e| anyhow::anyhow!("cannot serialize the tokenizer: {e}"))?;
        let value: serde_json::Value = serde_json::from_str(&text)?;
        let canonical = serde_json::to_vec(&value)?;
        Ok(blake3::hash(&canonical).to_hex().to_string())
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }
}

/// The fingerprint of the tokenizer of a model folder (see [`ModelTokenizer::fingerprint`]): training
/// compares it with `info.json`'s `tokenizer_fingerprint` to refuse data tokenized for another model.
pub fn tokenizer_fingerprint(model_dir: &Path) -> anyhow::Result<String> {
    ModelTokenizer::load(model_dir)?.fingerprint()
}

fn gguf_file(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_file() {
        anyhow::ensure!(
            path.extension().is_some_and(|e| e == "gguf"),
            "`{}` is neither a model folder nor a `.gguf` file",
            path.display()
        );
        return Ok(path.to_path_buf());
    }
    let mut ggufs = lf_model::load::gguf_files(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    match ggufs.len() {
        1 => Ok(ggufs.remove(0)),
        0 => anyhow::bail!(
            "the model has no tokenizer: `{}` holds neither `tokenizer.json` nor a `.gguf` file",
            path.display()
        ),
        _ => anyhow::bail!(
            "`{}` holds several `.gguf` files and no `tokenizer.json`; keep one",
            path.display()
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// SmolLM2's real tokenizer (`tests/fixtures/smollm2/tokenizer`).
    pub(crate) fn smollm2() -> ModelTokenizer {
        use std::sync::OnceLock;
        static TOK: OnceLock<ModelTokenizer> = OnceLock::new();
        TOK.get_or_init(|| ModelTokenizer::load(&smollm2_dir()).unwrap())
            .clone()
    }

    pub(crate) fn smollm2_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/smollm2/tokenizer")
    }

    #[test]
    fn smollm2_special_tokens() {
        let t = smollm2();
        assert_eq!(t.tokens.eos.as_deref(), Some("<|im_end|>"));
        assert_eq!(t.eos_id, Some(2));
        assert_eq!(t.pad_id, 2);
        assert!(!t.adds_bos);
        assert!(t.specials.iter().any(|s| s == "<|im_start|>"));
        assert!(t.chat_template.as_deref().unwrap().contains("<|im_start|>"));
    }

    #[test]
    fn fingerprint_ignores_formatting_but_not_content() {
        let dir = tempfile::tempdir().unwrap();
        let src = smollm2_dir();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(src.join("tokenizer.json")).unwrap())
                .unwrap();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            serde_json::to_string(&json).unwrap(),
        )
        .unwrap();
        let a = tokenizer_fingerprint(&src).unwrap();
        assert_eq!(a, tokenizer_fingerprint(dir.path()).unwrap());
        let mut changed = json.clone();
        changed["added_tokens"][0]["content"] = "<|changed|>".into();
        std::fs::write(
            dir.path().join("tokenizer.json"),
            serde_json::to_string(&changed).unwrap(),
        )
        .unwrap();
        assert_ne!(a, tokenizer_fingerprint(dir.path()).unwrap());
    }

    /// The SmolLM2 GGUF that `scripts/fetch-models.sh` fetches, if it is there.
    pub(crate) fn smollm2_gguf() -> Option<PathBuf> {
        let dir = std::env::var_os("LF_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.models"));
        let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
        path.is_file().then_some(path)
    }

    #[test]
    fn a_gguf_only_folder_tokenizes_like_tokenizer_json() {
        let Some(gguf) = smollm2_gguf() else {
            eprintln!("skipped: run scripts/fetch-models.sh for the SmolLM2 GGUF");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(&gguf, dir.path().join("model.gguf")).unwrap();
        let from_gguf = ModelTokenizer::load(dir.path()).unwrap();
        let from_json = smollm2();
        assert_eq!(from_gguf.origin, "model.gguf");
        assert_eq!(from_gguf.eos_id, from_json.eos_id);
        assert_eq!(from_gguf.chat_template, from_json.chat_template);
        let text = "<|im_start|>user\nHello, 서울! What's 3.14 × 2?<|im_end|>\n";
        let ids = |t: &ModelTokenizer| t.tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ids(&from_gguf), ids(&from_json));
        eprintln!(
            "fingerprints: gguf {} json {}",
            from_gguf.fingerprint().unwrap(),
            from_json.fingerprint().unwrap()
        );
    }

    #[test]
    fn a_folder_without_a_tokenizer_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let e = ModelTokenizer::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("holds neither `tokenizer.json` nor a `.gguf` file"),
            "{e}"
        );
    }
}
