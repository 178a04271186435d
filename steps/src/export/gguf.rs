//! Writing GGUF v3 files that llama.cpp loads: llama.cpp's tensor names, the Q/K row permutation of
//! `llama` models, F32/F16/BF16 and block-quantised data (llama.cpp's per-tensor type choices) aligned
//! to 32 bytes, the architecture's hyper-parameters,
//! and the tokenizer (`tokenizer.ggml.*`, byte-level BPE as `gpt2`) with the chat template.
//!
//! The file is streamed: the header, metadata and tensor infos are computed from the config first
//! (every tensor's size is known from its shape and type), then each tensor is converted and written
//! as the model yields it.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use lf_schemas::kinds::export::GgufType;
use serde_json::Value as Json;

use crate::data::ModelTokenizer;
use lf_model::ModelArtifact;
use lf_model::config::{Arch, ModelConfig, RopeScaling};
use lf_model::gguf::{GgmlType, GgufFile, GgufValue, encode_str};
use lf_model::gguf::{encode, gguf_arch, gguf_tensor_name, permute_rows};
use lf_model::llama::hf_tensor_shapes;
use lf_model::load::ModelFormat;

/// GGUF's data alignment (written as `general.alignment`).
pub const ALIGNMENT: u64 = 32;

/// GGUF token types (`llama_token_type`).
pub mod token_type {
    /// An ordinary token.
    pub const NORMAL: i32 = 1;
    /// The unknown token.
    pub const UNKNOWN: i32 = 2;
    /// A special (control) token.
    pub const CONTROL: i32 = 3;
    /// An added token that is not special.
    pub const USER_DEFINED: i32 = 4;
    /// A filler id with no token behind it.
    pub const UNUSED: i32 = 5;
}

/// `general.file_type` (`llama_ftype`) of a file of type `ty`. The pure k-quant files take the
/// number of the mix `llama-quantize --pure` is given for them (Q4_K_S, Q5_K_S, Q6_K).
fn file_type(ty: GgufType) -> u32 {
    match ty {
        GgufType::F32 => 0,
        GgufType::F16 => 1,
        GgufType::Q4_0 => 2,
        GgufType::Q4_1 => 3,
        GgufType::Q8_0 => 7,
        GgufType::Q5_0 => 8,
        GgufType::Q5_1 => 9,
        GgufType::Q4_K => 14,
        GgufType::Q4_K_M => 15,
        GgufType::Q5_K => 16,
        GgufType::Q5_K_M => 17,
        GgufType::Q6_K => 18,
        GgufType::Bf16 => 32,
    }
}

/// Where a tensor sits in the model, as the type choice needs it.
#[derive(Debug, Clone, Copy)]
pub struct TensorPlace<'a> {
    /// llama.cpp's tensor name (`blk.3.attn_v.weight`, `output.weight`, ...).
    pub name: &'a str,
    /// The model's number of layers.
    pub layers: usize,
    /// Whether the output projection is the token embedding (`tie_word_embeddings`).
    pub tied: bool,
}

impl TensorPlace<'_> {
    /// Whether this is the output projection: `output.weight`, or the embedding when the output is
    /// tied to it.
    fn is_output(&self) -> bool {
        self.name == "output.weight" || (self.tied && self.name == "token_embd.weight")
    }

    /// The layer of a `blk.N.*` tensor.
    fn layer(&self) -> Option<usize> {
        self.name
            .strip_prefix("blk.")?
            .split('.')
            .next()?
            .parse()
            .ok()
    }

    /// Whether this tensor is `kind` (`attn_v`, `ffn_down`) of a layer that llama.cpp's `_M` mixes
    /// give more bits: the first and last eighth of the layers, and every third layer between
    /// (its `use_more_bits`).
    fn more_bits(&self, kind: &str) -> bool {
        let Some(i) = self.layer() else {
            return false;
        };
        if !self.name.contains(&format!(".{kind}.")) {
            return false;
        }
        let n = self.layers;
        i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
    }
}

/// The tensor type a tensor of `shape` at `place` gets in a file of type `ty`, as llama.cpp chooses
/// it:
/// - vectors (norms, biases) stay F32, as llama.cpp's converter keeps them;
/// - F32, F16 and BF16 files store every matrix so;
/// - Q8_0 and the pure k-quant files store every matrix in their type;
/// - the 4/5-bit files of 32-weight blocks keep the output projection in Q8_0 (llama.cpp would use
///   Q6_K when its rows are a multiple of 256, Q8_0 otherwise);
/// - the `_M` mixes put the output projection in Q6_K, and `attn_v` and `ffn_down` in Q6_K in the
///   layers [`TensorPlace::more_bits`] picks;
/// - a matrix whose rows do not split into the type's blocks falls back as llama.cpp's quantiser
///   does (Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0), and to F16 when rows are not a multiple of 32.
pub fn tensor_type(ty: GgufType, place: TensorPlace<'_>, shape: &[usize]) -> GgmlType {
    if shape.len() < 2 {
        return GgmlType::F32;
    }
    let wanted = match ty {
        GgufType::F32 => return GgmlType::F32,
        GgufType::F16 => return GgmlType::F16,
        GgufType::Bf16 => return GgmlType::BF16,
        GgufType::Q8_0 => GgmlType::Q8_0,
        _ if place.is_output()
            && matches!(
                ty,
                GgufType::Q4_0 | GgufType::Q4_1 | GgufType::Q5_0 | GgufType::Q5_1
            ) =>
        {
            GgmlType::Q8_0
        }
        GgufType::Q4_0 => GgmlType::Q4_0,
        GgufType::Q4_1 => GgmlType::Q4_1,
        GgufType::Q5_0 => GgmlType::Q5_0,
        GgufType::Q5_1 => GgmlType::Q5_1,
        GgufType::Q4_K => GgmlType::Q4_K,
        GgufType::Q5_K => GgmlType::Q5_K,
        GgufType::Q6_K => GgmlType::Q6_K,
        GgufType::Q4_K_M | GgufType::Q5_K_M => {
            if place.is_output() || place.more_bits("attn_v") || place.more_bits("ffn_down") {
                GgmlType::Q6_K
            } else if ty == GgufType::Q4_K_M {
                GgmlType::Q4_K
            } else {
                GgmlType::Q5_K
            }
        }
    };
    fallback(wanted, shape[shape.len() - 1])
}

/// `ty`, or what llama.cpp's quantiser falls back to when rows of `cols` weights do not split into
/// its blocks.
fn fallback(ty: GgmlType, cols: usize) -> GgmlType {
    let fits = |t: GgmlType| (cols as u64).is_multiple_of(t.block().0);
    if fits(ty) {
        return ty;
    }
    let next = match ty {
        GgmlType::Q4_K => GgmlType::Q5_0,
        GgmlType::Q5_K => GgmlType::Q5_1,
        GgmlType::Q6_K => GgmlType::Q8_0,
        other => other,
    };
    if fits(next) { next } else { GgmlType::F16 }
}

/// llama.cpp's per-dimension RoPE factors for Llama 3.1 scaling (its `rope_freqs.weight`).
fn llama3_rope_factors(c: &ModelConfig) -> Option<Vec<f32>> {
    let Some(RopeScaling::Llama3 {
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
    }) = &c.rope_scaling
    else {
        return None;
    };
    let dim = c.head_dim;
    let old = *original_max_position_embeddings as f64;
    let low_wavelen = old / low_freq_factor;
    let high_wavelen = old / high_freq_factor;
    Some(
        (0..dim / 2)
            .map(|i| {
                let freq = 1.0 / c.rope_theta.powf((2 * i) as f64 / dim as f64);
                let wavelen = 2.0 * std::f64::consts::PI / freq;
                let f = if wavelen < high_wavelen {
                    1.0
                } else if wavelen > low_wavelen {
                    *factor
                } else {
                    let smooth =
                        (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                    1.0 / ((1.0 - smooth) / factor + smooth)
                };
                f as f32
            })
            .collect(),
    )
}

/// The `tokenizer.ggml.*` metadata of a model, and notes about what could not be carried over.
pub struct TokenizerMeta {
    /// Key/value pairs, in order.
    pub entries: Vec<(String, GgufValue)>,
    /// The `tokenizer.ggml.pre` value written.
    pub pre: String,
    /// Warnings for `export.json`.
    pub notes: Vec<String>,
}

/// The llama.cpp pre-tokenizer name (`tokenizer.ggml.pre`) matching a `tokenizer.json`
/// `pre_tokenizer`, when lf recognises it.
pub fn pre_tokenizer_name(pre: &Json) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    fn ty(v: &Json) -> &str {
        v.get("type").and_then(Json::as_str).unwrap_or("")
    }
    let byte_level_regex = |v: &Json| {
        ty(v) == "ByteLevel" && v.get("use_regex").and_then(Json::as_bool) != Some(false)
    };
    let byte_level_plain = |v: &Json| {
        ty(v) == "ByteLevel" && v.get("use_regex").and_then(Json::as_bool) == Some(false)
    };
    fn split_regex(v: &Json) -> Option<&str> {
        (ty(v) == "Split")
            .then(|| v.get("pattern")?.get("Regex")?.as_str())
            .flatten()
    }
    if byte_level_regex(pre) {
        return Some("gpt-2");
    }
    if ty(pre) != "Sequence" {
        return None;
    }
    let items = pre.get("pretokenizers")?.as_array()?;
    match items.as_slice() {
        [a] if byte_level_regex(a) => Some("gpt-2"),
        [d, b]
            if ty(d) == "Digits"
                && d.get("individual_digits").and_then(Json::as_bool) == Some(true)
                && byte_level_regex(b) =>
        {
            Some("smollm")
        }
        [s, b] if byte_level_plain(b) => match split_regex(s)? {
            r if r == LLAMA3 => Some("llama-bpe"),
            r if r == QWEN2 => Some("qwen2"),
            _ => None,
        },
        _ => None,
    }
}

/// Builds the tokenizer metadata of `model`: copied from its GGUF file when its weights come from
/// one (the `tokenizer.json` lf rebuilds from GGUF metadata may not carry every detail), else from a
/// byte-level BPE `tokenizer.json` (written as llama.cpp's `gpt2` model). `chat_template` is the
/// template to embed.
pub fn tokenizer_meta(
    model: &ModelArtifact,
    tokenizer_dir: &Path,
    chat_template: Option<&str>,
) -> anyhow::Result<TokenizerMeta> {
    let mut entries: Vec<(String, GgufValue)> = Vec::new();
    let mut notes = Vec::new();
    let tok_json = tokenizer_dir.join("tokenizer.json");
    if let ModelFormat::Gguf(file) = &model.base {
        let gguf = GgufFile::open(file)?;
        let mut pre = "default".to_string();
        for (k, v) in &gguf.metadata {
            if k.starts_with("tokenizer.ggml.") {
                if k == "tokenizer.ggml.pre"
                    && let Some(s) = v.as_str()
                {
                    pre = s.to_string();
                }
                entries.push((k.clone(), v.clone()));
            }
        }
        if let Some(t) = chat_template {
            entries.push((
                "tokenizer.chat_template".into(),
                GgufValue::String(t.into()),
            ));
        }
        return Ok(TokenizerMeta {
            entries,
            pre,
            notes,
        });
    }
    let text = std::fs::read_to_string(&tok_json)
        .with_context(|| format!("cannot read `{}`", tok_json.display()))?;
    let tj: Json = serde_json::from_str(&text)
        .with_context(|| format!("cannot parse `{}`", tok_json.display()))?;
    let m = &tj["model"];
    let is_bpe = m.get("type").and_then(Json::as_str) == Some("BPE") || m.get("merges").is_some();
    let pre_json = tj.get("pre_tokenizer").cloned().unwrap_or(Json::Null);
    let byte_level = text.contains("\"ByteLevel\"");
    anyhow::ensure!(
        is_bpe && byte_level && m.get("byte_fallback").and_then(Json::as_bool) != Some(true),
        "GGUF export supports byte-level BPE tokenizers (GPT-2 style, as SmolLM, Llama 3, Qwen2 and lf's own `tokenizer` step use); `{}` is another kind\nhint: convert this model with llama.cpp's `convert_hf_to_gguf.py`, or leave `gguf` out",
        tok_json.display()
    );
    let vocab = m["vocab"]
        .as_object()
        .context("tokenizer.json has no `model.vocab`")?;
    let mut by_id: BTreeMap<u32, String> = BTreeMap::new();
    for (tok, id) in vocab {
        let id = id.as_u64().context("vocab ids must be integers")? as u32;
        by_id.insert(id, tok.clone());
    }
    let mut types: HashMap<u32, i32> = HashMap::new();
    for added in tj["added_tokens"].as_array().into_iter().flatten() {
        let id = added["id"].as_u64().context("added token without id")? as u32;
        let content = added["content"].as_str().unwrap_or_default().to_string();
        let special = added["special"].as_bool().unwrap_or(false);
        by_id.insert(id, content);
        types.insert(
            id,
            if special {
                token_type::CONTROL
            } else {
                token_type::USER_DEFINED
            },
        );
    }
    let n_vocab = model.config.vocab_size;
    let max_id = by_id.keys().next_back().copied().unwrap_or(0) as usize;
    anyhow::ensure!(
        max_id < n_vocab,
        "the tokenizer has token id {max_id}, beyond the model's vocabulary of {n_vocab}"
    );
    let mut tokens = Vec::with_capacity(n_vocab);
    let mut token_types = Vec::with_capacity(n_vocab);
    for id in 0..n_vocab as u32 {
        match by_id.get(&id) {
            Some(t) => {
                tokens.push(GgufValue::String(t.clone()));
                token_types.push(GgufValue::I32(
                    types.get(&id).copied().unwrap_or(token_type::NORMAL),
                ));
            }
            None => {
                tokens.push(GgufValue::String(format!("[PAD{id}]")));
                token_types.push(GgufValue::I32(token_type::UNUSED));
            }
        }
    }
    let merges: Vec<GgufValue> = m["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| match v {
            Json::String(s) => Ok(GgufValue::String(s.clone())),
            Json::Array(pair) if pair.len() == 2 => Ok(GgufValue::String(format!(
                "{} {}",
                pair[0].as_str().unwrap_or_default(),
                pair[1].as_str().unwrap_or_default()
            ))),
            other => Err(anyhow::anyhow!("malformed merge {other}")),
        })
        .collect::<anyhow::Result<_>>()?;
    let pre = match pre_tokenizer_name(&pre_json) {
        Some(p) => p.to_string(),
        None => {
            notes.push(format!(
                "the tokenizer's pre-tokenizer is not one lf maps to llama.cpp's (`gpt-2`, `smollm`, `llama-bpe`, `qwen2`); `tokenizer.ggml.pre` is `default`, so llama.cpp may split some text differently: {pre_json}"
            ));
            "default".to_string()
        }
    };
    let tk = ModelTokenizer::load(tokenizer_dir)?;
    entries.push((
        "tokenizer.ggml.model".into(),
        GgufValue::String("gpt2".into()),
    ));
    entries.push(("tokenizer.ggml.pre".into(), GgufValue::String(pre.clone())));
    entries.push(("tokenizer.ggml.tokens".into(), GgufValue::Array(tokens)));
    entries.push((
        "tokenizer.ggml.token_type".into(),
        GgufValue::Array(token_types),
    ));
    entries.push(("tokenizer.ggml.merges".into(), GgufValue::Array(merges)));
    let c = &model.config;
    let bos = tk.bos_id.or(c.bos_token_id);
    let eos = tk.eos_id.or(c.eos_token_ids.first().copied());
    let pad = tk
        .tokens
        .pad
        .as_deref()
        .and_then(|t| tk.tokenizer.token_to_id(t))
        .or(c.pad_token_id);
    let unk = tk
        .tokens
        .unk
        .as_deref()
        .and_then(|t| tk.tokenizer.token_to_id(t));
    for (key, id) in [
        ("bos_token_id", bos),
        ("eos_token_id", eos),
        ("unknown_token_id", unk),
        ("padding_token_id", pad),
    ] {
        if let Some(id) = id {
            entries.push((format!("tokenizer.ggml.{key}"), GgufValue::U32(id)));
        }
    }
    entries.push((
        "tokenizer.ggml.add_bos_token".into(),
        GgufValue::Bool(tk.adds_bos),
    ));
    entries.push((
        "tokenizer.ggml.add_eos_token".into(),
        GgufValue::Bool(false),
    ));
    if let Some(t) = chat_template {
        entries.push((
            "tokenizer.chat_template".into(),
            GgufValue::String(t.into()),
        ));
    }
    Ok(TokenizerMeta {
        entries,
        pre,
        notes,
    })
}

/// The architecture metadata of `config` (`general.*` and `<arch>.*`).
pub fn model_meta(c: &ModelConfig, ty: GgufType) -> Vec<(String, GgufValue)> {
    let arch = gguf_arch(c.arch);
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| GgufValue::U32(v as u32);
    let mut m = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String(arch.into()),
        ),
        ("general.type".into(), GgufValue::String("model".into())),
        ("general.file_type".into(), GgufValue::U32(file_type(ty))),
        ("general.quantization_version".into(), GgufValue::U32(2)),
        ("general.alignment".into(), GgufValue::U32(ALIGNMENT as u32)),
        (k("vocab_size"), u(c.vocab_size)),
        (k("context_length"), u(c.max_position_embeddings)),
        (k("embedding_length"), u(c.hidden_size)),
        (k("block_count"), u(c.num_hidden_layers)),
        (k("feed_forward_length"), u(c.intermediate_size)),
        (k("attention.head_count"), u(c.num_attention_heads)),
        (k("attention.head_count_kv"), u(c.num_key_value_heads)),
        (k("attention.key_length"), u(c.head_dim)),
        (k("attention.value_length"), u(c.head_dim)),
        (
            k("attention.layer_norm_rms_epsilon"),
            GgufValue::F32(c.rms_norm_eps as f32),
        ),
        (k("rope.dimension_count"), u(c.head_dim)),
        (k("rope.freq_base"), GgufValue::F32(c.rope_theta as f32)),
    ];
    if let Some(RopeScaling::Linear { factor }) = &c.rope_scaling {
        m.push((k("rope.scaling.type"), GgufValue::String("linear".into())));
        m.push((k("rope.scaling.factor"), GgufValue::F32(*factor as f32)));
    }
    m
}

/// What [`write_gguf`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GgufSummary {
    /// File name.
    pub file: String,
    /// `f16`, `q8_0`, ...
    #[serde(rename = "type")]
    pub ty: GgufType,
    /// Number of tensors.
    pub tensors: usize,
    /// Tensors stored in each GGML type.
    pub tensor_types: BTreeMap<String, usize>,
    /// File size in bytes.
    pub bytes: u64,
    /// `tokenizer.ggml.pre`.
    pub pre_tokenizer: String,
}

fn pad_to(out: &mut impl Write, written: u64) -> std::io::Result<u64> {
    let padded = written.div_ceil(ALIGNMENT) * ALIGNMENT;
    out.write_all(&vec![0u8; (padded - written) as usize])?;
    Ok(padded)
}

/// Writes `model` as a GGUF file of type `ty` at `path`, with `tokenizer` metadata.
pub fn write_gguf(
    model: &ModelArtifact,
    path: &Path,
    ty: GgufType,
    tokenizer: &TokenizerMeta,
    mut progress: impl FnMut(),
) -> anyhow::Result<GgufSummary> {
    let c = &model.config;
    let shapes = hf_tensor_shapes(c);
    // (gguf name, hf shape, type) in file order.
    let mut infos: Vec<(String, Vec<usize>, GgmlType)> = Vec::new();
    let rope_factors = llama3_rope_factors(c);
    if let Some(f) = &rope_factors {
        infos.push(("rope_freqs.weight".into(), vec![f.len()], GgmlType::F32));
    }
    for (name, shape) in &shapes {
        let g =
            gguf_tensor_name(name).with_context(|| format!("no GGUF name for tensor `{name}`"))?;
        let place = TensorPlace {
            name: &g,
            layers: c.num_hidden_layers,
            tied: c.tie_word_embeddings,
        };
        let t = tensor_type(ty, place, shape);
        infos.push((g, shape.clone(), t));
    }

    let mut header = Vec::new();
    header.extend_from_slice(b"GGUF");
    header.extend_from_slice(&3u32.to_le_bytes());
    header.extend_from_slice(&(infos.len() as u64).to_le_bytes());
    let mut meta = model_meta(c, ty);
    meta.extend(tokenizer.entries.iter().cloned());
    header.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    for (k, v) in &meta {
        encode_str(&mut header, k);
        header.extend_from_slice(&v.type_id().to_le_bytes());
        v.encode(&mut header);
    }
    let mut offset = 0u64;
    let mut tensor_types: BTreeMap<String, usize> = BTreeMap::new();
    for (name, shape, t) in &infos {
        encode_str(&mut header, name);
        header.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            header.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        header.extend_from_slice(&t.id().to_le_bytes());
        header.extend_from_slice(&offset.to_le_bytes());
        offset += t.byte_size(shape.iter().product());
        offset = offset.div_ceil(ALIGNMENT) * ALIGNMENT;
        *tensor_types.entry(t.to_string()).or_default() += 1;
    }

    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create `{}`", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&header)?;
    let mut written = pad_to(&mut out, header.len() as u64)?;
    let data_start = written;
    let write_tensor = |out: &mut BufWriter<std::fs::File>,
                        written: &mut u64,
                        values: &[f32],
                        t: GgmlType|
     -> std::io::Result<()> {
        let bytes = encode(values, t).map_err(std::io::Error::other)?;
        out.write_all(&bytes)?;
        *written = pad_to(out, *written + bytes.len() as u64)?;
        Ok(())
    };
    let mut next = 0usize;
    if let Some(f) = &rope_factors {
        write_tensor(&mut out, &mut written, f, GgmlType::F32)?;
        next += 1;
    }
    let permute = matches!(c.arch, Arch::Llama | Arch::Mistral);
    model.tensors(|_, shape, values| {
        let (gname, _, t) = &infos[next];
        next += 1;
        let values = if permute && (gname.contains(".attn_q.") || gname.contains(".attn_k.")) {
            let heads = if gname.contains(".attn_q.") {
                c.num_attention_heads
            } else {
                c.num_key_value_heads
            };
            let cols = if shape.len() == 2 { shape[1] } else { 1 };
            permute_rows(&values, shape[0], cols, heads)
        } else {
            values
        };
        write_tensor(&mut out, &mut written, &values, *t)?;
        progress();
        Ok(())
    })?;
    anyhow::ensure!(
        written - data_start == offset,
        "internal error: GGUF tensor data is {} bytes, its infos say {offset}",
        written - data_start
    );
    out.flush()?;
    Ok(GgufSummary {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        ty,
        tensors: infos.len(),
        tensor_types,
        bytes: written,
        pre_tokenizer: tokenizer.pre.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_types_follow_llama_cpp() {
        fn place(name: &str) -> TensorPlace<'_> {
            TensorPlace {
                name,
                layers: 32,
                tied: false,
            }
        }
        let w = place("blk.0.attn_q.weight");
        assert_eq!(tensor_type(GgufType::Q8_0, w, &[64]), GgmlType::F32);
        assert_eq!(tensor_type(GgufType::Q8_0, w, &[64, 64]), GgmlType::Q8_0);
        assert_eq!(tensor_type(GgufType::Q8_0, w, &[64, 48]), GgmlType::F16);
        assert_eq!(tensor_type(GgufType::F16, w, &[3, 5]), GgmlType::F16);
        assert_eq!(tensor_type(GgufType::Bf16, w, &[3, 5]), GgmlType::BF16);
        // The output projection stays at 8 bits in the 4/5-bit files; a tied embedding is the output.
        let out = place("output.weight");
        assert_eq!(tensor_type(GgufType::Q4_1, out, &[64, 64]), GgmlType::Q8_0);
        assert_eq!(tensor_type(GgufType::Q4_1, w, &[64, 64]), GgmlType::Q4_1);
        let tied = TensorPlace {
            tied: true,
            ..place("token_embd.weight")
        };
        assert_eq!(tensor_type(GgufType::Q4_0, tied, &[64, 64]), GgmlType::Q8_0);
        assert_eq!(
            tensor_type(GgufType::Q4_0, place("token_embd.weight"), &[64, 64]),
            GgmlType::Q4_0
        );
        // k-quants: blocks of 256, with llama.cpp's fallbacks.
        assert_eq!(tensor_type(GgufType::Q4_K, w, &[8, 512]), GgmlType::Q4_K);
        assert_eq!(tensor_type(GgufType::Q4_K, w, &[8, 576]), GgmlType::Q5_0);
        assert_eq!(tensor_type(GgufType::Q5_K, w, &[8, 576]), GgmlType::Q5_1);
        assert_eq!(tensor_type(GgufType::Q6_K, w, &[8, 576]), GgmlType::Q8_0);
        assert_eq!(tensor_type(GgufType::Q6_K, w, &[8, 48]), GgmlType::F16);
        assert_eq!(tensor_type(GgufType::Q4_K, out, &[8, 512]), GgmlType::Q4_K);
        // Q4_K_M on 32 layers: Q6_K for the output and for attn_v and ffn_down of layers 0-3, every
        // third from 6 to 27, and 28-31; Q4_K elsewhere.
        for ty in [GgufType::Q4_K_M, GgufType::Q5_K_M] {
            let base = if ty == GgufType::Q4_K_M {
                GgmlType::Q4_K
            } else {
                GgmlType::Q5_K
            };
            assert_eq!(tensor_type(ty, out, &[8, 512]), GgmlType::Q6_K);
            assert_eq!(tensor_type(ty, out, &[8, 576]), GgmlType::Q8_0);
            assert_eq!(tensor_type(ty, tied, &[8, 512]), GgmlType::Q6_K);
            assert_eq!(tensor_type(ty, place("token_embd.weight"), &[8, 512]), base);
            let mut more = Vec::new();
            for i in 0..32 {
                let v = tensor_type(ty, place(&format!("blk.{i}.attn_v.weight")), &[8, 512]);
                let d = tensor_type(ty, place(&format!("blk.{i}.ffn_down.weight")), &[8, 512]);
                let q = tensor_type(ty, place(&format!("blk.{i}.attn_q.weight")), &[8, 512]);
                assert_eq!(v, d, "layer {i}");
                assert_eq!(q, base, "layer {i}");
                if v == GgmlType::Q6_K {
                    more.push(i);
                } else {
                    assert_eq!(v, base);
                }
            }
            let want: Vec<usize> = (0..4).chain((6..28).step_by(3)).chain(28..32).collect();
            assert_eq!(more, want, "{ty:?}");
        }
    }

    #[test]
    fn pre_tokenizers_are_recognised() {
        let gpt2 = serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
        assert_eq!(pre_tokenizer_name(&gpt2), Some("gpt-2"));
        let smol = serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
        ]});
        assert_eq!(pre_tokenizer_name(&smol), Some("smollm"));
        let other = serde_json::json!({"type": "Whitespace"});
        assert_eq!(pre_tokenizer_name(&other), None);
    }
}
