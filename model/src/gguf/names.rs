//! llama.cpp's tensor names for Hugging Face ones, the Q/K row permutation `llama` GGUF files use,
//! and [`GgufSource`], a GGUF file's tensors under their Hugging Face names.

use std::path::Path;

use super::read::GgufFile;
use crate::config::{Arch, ModelConfig};
use crate::error::{Error, Result};
use crate::llama::TensorSource;
use crate::quant::QuantizedMatrix;

/// The GGUF name of a HF tensor name (llama.cpp's naming).
pub fn gguf_tensor_name(hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let g = match module {
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}.{suffix}"))
}

/// Undoes llama.cpp's permutation of Q/K rows for its interleaved RoPE: within each head of
/// width `hd`, GGUF row `2·d + j` is HF row `j·hd/2 + d`.
/// `cols` counts elements of `data` per row: f32 values, or the bytes of a row of GGML blocks.
pub fn unpermute_rows<T: Copy + Default>(
    data: &[T],
    rows: usize,
    cols: usize,
    n_heads: usize,
) -> Vec<T> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_heads {
        for d in 0..half {
            for j in 0..2 {
                let src = h * hd + 2 * d + j;
                let dst = h * hd + j * half + d;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// HF-named tensors dequantised from a GGUF file.
pub struct GgufSource<'a> {
    file: &'a GgufFile,
    config: &'a ModelConfig,
}

impl<'a> GgufSource<'a> {
    /// A source over `file`, whose config is `config`.
    pub fn new(file: &'a GgufFile, config: &'a ModelConfig) -> Self {
        GgufSource { file, config }
    }
}

impl TensorSource for GgufSource<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let gname = gguf_tensor_name(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
            path: self.file.path().map(Path::to_owned),
        })?;
        if self.file.tensor(&gname).is_none() {
            return Err(Error::Gguf {
                path: self.file.path().map(Path::to_owned),
                msg: format!("missing tensor `{gname}` (HF `{name}`)"),
            });
        }
        let (data, got) = self.file.dequantize(&gname)?;
        // A 1-D tensor may be stored as [n] or [1, n].
        let same = got == shape
            || got.iter().product::<usize>() == shape.iter().product::<usize>()
                && got
                    .iter()
                    .filter(|&&d| d != 1)
                    .eq(shape.iter().filter(|&&d| d != 1));
        if !same {
            return Err(Error::Shape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                got,
            });
        }
        let rows = shape[0];
        let cols = if shape.len() == 2 { shape[1] } else { 1 };
        Ok(match self.permuted_heads(&gname) {
            Some(heads) => unpermute_rows(&data, rows, cols, heads),
            None => data,
        })
    }

    fn quantized(&mut self, name: &str, shape: &[usize]) -> Result<Option<QuantizedMatrix>> {
        let Some(gname) = gguf_tensor_name(name) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor(&gname) else {
            return Ok(None);
        };
        let ty = info.ggml_type;
        if ty.block().0 == 1 || info.hf_shape() != shape || shape.len() != 2 {
            return Ok(None);
        }
        let (rows, cols) = (shape[0], shape[1]);
        let bytes = self.file.tensor_bytes(info);
        let row_bytes = ty.byte_size(cols) as usize;
        let bytes = match self.permuted_heads(&gname) {
            Some(heads) => unpermute_rows(bytes, rows, row_bytes, heads),
            None => bytes.to_vec(),
        };
        QuantizedMatrix::from_ggml(ty, bytes, rows, cols)
            .map(Some)
            .map_err(|e| match e {
                Error::Unsupported(m) => Error::Unsupported(format!("tensor `{gname}`: {m}")),
                other => other,
            })
    }
}

impl GgufSource<'_> {
    /// The head count whose rows llama.cpp permuted in tensor `gname`, if it did: Q/K of `llama`
    /// models, for its interleaved RoPE (qwen2/3 use NeoX RoPE there and are stored unpermuted).
    fn permuted_heads(&self, gname: &str) -> Option<usize> {
        if !matches!(self.config.arch, Arch::Llama | Arch::Mistral) {
            return None;
        }
        if gname.contains(".attn_q.") {
            Some(self.config.num_attention_heads)
        } else if gname.contains(".attn_k.") {
            Some(self.config.num_key_value_heads)
        } else {
            None
        }
    }
}

/// Permutes the rows of a Q or K projection (`[heads·hd, cols]`) the way llama.cpp's converter does
/// for its interleaved RoPE: within each head, HF row `j·hd/2 + d` becomes row `2·d + j`. The inverse
/// of [`unpermute_rows`].
pub fn permute_rows(data: &[f32], rows: usize, cols: usize, n_heads: usize) -> Vec<f32> {
    let hd = rows / n_heads;
    let half = hd / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..n_heads {
        for d in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + d;
                let dst = h * hd + 2 * d + j;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// The GGUF (llama.cpp) architecture name of a model: Mistral models are written as `llama`, as
/// llama.cpp's converter does (its `llama` graph has no sliding window).
pub fn gguf_arch(arch: Arch) -> &'static str {
    match arch {
        Arch::Llama | Arch::Mistral => "llama",
        Arch::Qwen2 => "qwen2",
        Arch::Qwen3 => "qwen3",
    }
}
