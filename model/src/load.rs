//! Loading and saving models: HF safetensors directories (single file or sharded through
//! `model.safetensors.index.json`, f32/f16/bf16), GGUF files, seeded random initialisation, and
//! saving to a HF directory (`config.json` + `model.safetensors`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use half::{bf16, f16};
use safetensors::tensor::{Dtype as StDtype, Metadata, SafeTensors, View};

use crate::backend::{Dtype, burn_dtype};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::tokenizer::TokenizerBundle;
use crate::gguf::{GgufFile, GgufSource};
use crate::llama::{BuildOptions, Llama, TensorSource};
use crate::quant::bnb::{self, Absmax, FourBit};
use crate::quant::{FourBitMatrix, QuantizedMatrix};
use crate::rng::Rng;

/// File contents, memory-mapped or owned.
pub enum Bytes {
    /// A read-only memory map of a file.
    Mapped(memmap2::Mmap),
    /// Bytes in memory.
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    /// Maps `path` read-only.
    #[allow(unsafe_code)]
    pub fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            // Mapping an empty file fails on some platforms; nothing to map anyway.
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: the map is read-only and private to this process. Model files are not expected
        // to change while loaded; if one is truncated underneath us the OS may raise SIGBUS, the
        // usual caveat of every mmap-based loader (safetensors, llama.cpp), accepted for the
        // memory savings on multi-GB checkpoints.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(Bytes::Mapped(map))
    }
}

/// What kind of checkpoint a path holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFormat {
    /// A HF directory with `config.json` and safetensors weights.
    HfDir(PathBuf),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl ModelFormat {
    /// Decides how to read `path`: a `.gguf` file, a directory with `config.json`, a directory
    /// holding exactly one `.gguf`, or a `.safetensors` file next to a `config.json`.
    pub fn detect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_file() {
            return match path.extension().and_then(|e| e.to_str()) {
                Some("gguf") => Ok(ModelFormat::Gguf(path.to_owned())),
                Some("safetensors") | Some("json") => {
                    let dir = path.parent().unwrap_or(Path::new("."));
                    if dir.join("config.json").is_file() {
                        Ok(ModelFormat::HfDir(dir.to_owned()))
                    } else {
                        Err(Error::config(format!(
                            "`{}` has no `config.json` beside it",
                            path.display()
                        )))
                    }
                }
                _ => Err(Error::config(format!(
                    "`{}` is neither a `.gguf` file nor a model directory",
                    path.display()
                ))),
            };
        }
        if path.join("config.json").is_file() {
            return Ok(ModelFormat::HfDir(path.to_owned()));
        }
        let mut ggufs = gguf_files(path).map_err(|e| Error::io(path, e))?;
        match ggufs.len() {
            1 => Ok(ModelFormat::Gguf(ggufs.remove(0))),
            0 => Err(Error::config(format!(
                "`{}` holds neither `config.json` nor a `.gguf` file",
                path.display()
            ))),
            _ => Err(Error::config(format!(
                "`{}` holds several `.gguf` files ({}); pass one of them",
                path.display(),
                ggufs
                    .iter()
                    .filter_map(|p| p.file_name().map(|n| format!("`{}`", n.to_string_lossy())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The `.gguf` files of `dir`, sorted by name.
pub fn gguf_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    found.sort();
    Ok(found)
}

/// The first `.gguf` file of `dir` by name, if it holds one.
pub fn find_gguf(dir: &Path) -> std::io::Result<Option<PathBuf>> {
    Ok(gguf_files(dir)?.into_iter().next())
}

struct StFile {
    path: PathBuf,
    bytes: Bytes,
    header_len: usize,
    meta: Metadata,
}

impl StFile {
    fn open(path: &Path) -> Result<Self> {
        let bytes = Bytes::map(path)?;
        let (header_len, meta) =
            SafeTensors::read_metadata(&bytes).map_err(|source| Error::Safetensors {
                path: path.to_owned(),
                source,
            })?;
        Ok(StFile {
            path: path.to_owned(),
            bytes,
            header_len,
            meta,
        })
    }

    fn names(&self) -> Vec<String> {
        self.meta.tensors().into_keys().collect()
    }

    /// A tensor's dtype, shape and bytes as stored.
    fn raw(&self, name: &str) -> Option<(StDtype, &[usize], &[u8])> {
        let info = self.meta.info(name)?;
        // read_metadata validated that the offsets lie inside the buffer.
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        Some((info.dtype, &info.shape, &self.bytes[start..end]))
    }

    fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let info = self.meta.info(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_owned(),
            path: Some(self.path.clone()),
        })?;
        if info.shape != shape {
            return Err(Error::Shape {
                name: name.to_owned(),
                expected: shape.to_vec(),
                got: info.shape.clone(),
            });
        }
        // read_metadata validated that the offsets lie inside the buffer.
        let start = 8 + self.header_len + info.data_offsets.0;
        let end = 8 + self.header_len + info.data_offsets.1;
        let raw = &self.bytes[start..end];
        let n: usize = shape.iter().product();
        Ok(match floats(info.dtype, raw) {
            Some(values) if values.len() == n && raw.len() * 8 == n * info.dtype.bitsize() => {
                values
            }
            Some(_) => {
                return Err(Error::Config {
                    path: Some(self.path.clone()),
                    msg: format!("tensor `{name}` has {} bytes for {n} elements", raw.len()),
                });
            }
            None => {
                let other = info.dtype;
                return Err(Error::Unsupported(format!(
                    "tensor `{name}` in `{}` has dtype {other:?}; supported: F32, F16, BF16",
                    self.path.display()
                )));
            }
        })
    }
}

/// Little-endian F32, F16 or BF16 bytes as f32 values; `None` for other dtypes.
fn floats(dtype: StDtype, raw: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        StDtype::F32 => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        StDtype::F16 => raw
            .chunks_exact(2)
            .map(|c| f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        StDtype::BF16 => raw
            .chunks_exact(2)
            .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        _ => return None,
    })
}

/// HF-named tensors from one safetensors file or a sharded set.
pub struct SafetensorsSource {
    files: Vec<StFile>,
    index: HashMap<String, usize>,
}

impl SafetensorsSource {
    /// Opens the weights of a HF directory: `model.safetensors.index.json` if present, else
    /// `model.safetensors`, else the only `*.safetensors` file.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    path: index_path.clone(),
                    source,
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Config {
                    path: Some(index_path.clone()),
                    msg: "missing `weight_map`".into(),
                })?;
            let mut shard_names: Vec<String> = map
                .values()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect();
            shard_names.sort();
            shard_names.dedup();
            let mut files = Vec::new();
            let mut by_name = HashMap::new();
            for s in &shard_names {
                if s.contains('/') || s.contains('\\') || s.contains("..") {
                    return Err(Error::Config {
                        path: Some(index_path.clone()),
                        msg: format!("shard name `{s}` must be a plain file name"),
                    });
                }
                by_name.insert(s.clone(), files.len());
                files.push(StFile::open(&dir.join(s))?);
            }
            let mut index = HashMap::new();
            for (tensor, shard) in map {
                if let Some(&i) = shard.as_str().and_then(|s| by_name.get(s)) {
                    index.insert(tensor.clone(), i);
                }
            }
            return Ok(SafetensorsSource { files, index });
        }
        let single = dir.join("model.safetensors");
        let path = if single.is_file() {
            single
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| Error::io(dir, e))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            match found.len() {
                1 => found.remove(0),
                0 => {
                    let hint = if dir.join("pytorch_model.bin").exists() {
                        "\nhint: `pytorch_model.bin` checkpoints are not supported; convert them to safetensors"
                    } else {
                        ""
                    };
                    return Err(Error::Config {
                        path: Some(dir.to_owned()),
                        msg: format!("no safetensors weights found{hint}"),
                    });
                }
                _ => {
                    return Err(Error::Config {
                        path: Some(dir.to_owned()),
                        msg: "several safetensors files but no `model.safetensors.index.json`"
                            .into(),
                    });
                }
            }
        };
        Self::open_file(&path)
    }

    /// Opens a single safetensors file.
    pub fn open_file(path: &Path) -> Result<Self> {
        let f = StFile::open(path)?;
        let index = f.names().into_iter().map(|n| (n, 0)).collect();
        Ok(SafetensorsSource {
            files: vec![f],
            index,
        })
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.index.keys().cloned().collect();
        v.sort();
        v
    }
}

impl SafetensorsSource {
    fn raw(&self, name: &str) -> Option<(StDtype, &[usize], &[u8])> {
        self.index.get(name).and_then(|&i| self.files[i].raw(name))
    }

    fn path(&self) -> Option<PathBuf> {
        self.files.first().map(|f| f.path.clone())
    }

    fn bad(&self, name: &str, msg: impl std::fmt::Display) -> Error {
        Error::Config {
            path: self.path(),
            msg: format!("bitsandbytes tensor `{name}`: {msg}"),
        }
    }

    /// A float vector stored in F32, F16 or BF16.
    fn floats(&self, name: &str) -> Result<Vec<f32>> {
        let (dtype, _, bytes) = self.raw(name).ok_or_else(|| self.bad(name, "is missing"))?;
        floats(dtype, bytes)
            .ok_or_else(|| self.bad(name, format!("has dtype {dtype:?}, not a float")))
    }

    fn bytes_of(&self, name: &str, dtype: StDtype) -> Result<&[u8]> {
        match self.raw(name) {
            Some((d, _, bytes)) if d == dtype => Ok(bytes),
            Some((d, _, _)) => Err(self.bad(name, format!("has dtype {d:?}, expected {dtype:?}"))),
            None => Err(self.bad(name, "is missing")),
        }
    }

    /// The weight `name` (`….q_proj.weight`) as bitsandbytes saved it quantised, if it did: 4-bit
    /// (`weight` packed, `weight.absmax`, `weight.quant_map`, with double quantisation
    /// `weight.nested_absmax` and `weight.nested_quant_map`, and the JSON
    /// `weight.quant_state.bitsandbytes__nf4|fp4`), or 8-bit (`weight` int8 and the row scales
    /// `SCB`).
    fn bnb(&self, name: &str, shape: &[usize]) -> Result<Option<QuantizedMatrix>> {
        let [rows, cols] = match shape {
            &[r, c] => [r, c],
            _ => return Ok(None),
        };
        let four = [FourBit::Nf4, FourBit::Fp4].into_iter().find_map(|kind| {
            self.raw(&format!("{name}.quant_state.bitsandbytes__{}", kind.name()))
                .map(|(_, _, json)| (kind, json))
        });
        if let Some((kind, json)) = four {
            let state: serde_json::Value = serde_json::from_slice(json)
                .map_err(|e| self.bad(name, format!("unreadable quant_state: {e}")))?;
            let saved: Option<Vec<usize>> = state["shape"].as_array().map(|a| {
                a.iter()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect()
            });
            if saved.as_deref() != Some(shape) {
                return Err(Error::Shape {
                    name: name.to_owned(),
                    expected: shape.to_vec(),
                    got: saved.unwrap_or_default(),
                });
            }
            let map = self.floats(&format!("{name}.quant_map"))?;
            if map != kind.code() {
                return Err(self.bad(
                    name,
                    format!("its quant_map is not bitsandbytes' {}", kind.name()),
                ));
            }
            let absmax_name = format!("{name}.absmax");
            let absmax = if state.get("nested_blocksize").is_some() {
                if state["nested_blocksize"].as_u64() != Some(bnb::DOUBLE_BLOCK as u64) {
                    return Err(self.bad(name, "nested blocks of other than 256 scales"));
                }
                if self.floats(&format!("{name}.nested_quant_map"))? != bnb::dynamic_map() {
                    return Err(self.bad(
                        name,
                        "its nested_quant_map is not bitsandbytes' dynamic map",
                    ));
                }
                Absmax::Double {
                    codes: self.bytes_of(&absmax_name, StDtype::U8)?.to_vec(),
                    absmax2: self.floats(&format!("{name}.nested_absmax"))?,
                    offset: state["nested_offset"]
                        .as_f64()
                        .ok_or_else(|| self.bad(name, "no nested_offset"))?
                        as f32,
                }
            } else {
                Absmax::Plain(self.floats(&absmax_name)?)
            };
            let block = state["blocksize"]
                .as_u64()
                .ok_or_else(|| self.bad(name, "no blocksize"))? as usize;
            let m = FourBitMatrix {
                kind,
                packed: self.bytes_of(name, StDtype::U8)?.to_vec(),
                absmax,
                block,
            };
            return QuantizedMatrix::four_bit(m, rows, cols)
                .map(Some)
                .map_err(|e| self.bad(name, e));
        }
        let scb = format!("{}.SCB", name.strip_suffix(".weight").unwrap_or(name));
        if self.raw(&scb).is_some() {
            let q = self
                .bytes_of(name, StDtype::I8)?
                .iter()
                .map(|&b| b as i8)
                .collect();
            return QuantizedMatrix::int8(q, self.floats(&scb)?, rows, cols)
                .map(Some)
                .map_err(|e| self.bad(name, e));
        }
        Ok(None)
    }
}

impl TensorSource for SafetensorsSource {
    fn quantized(&mut self, name: &str, shape: &[usize]) -> Result<Option<QuantizedMatrix>> {
        self.bnb(name, shape)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        if let Some(q) = self.bnb(name, shape)? {
            return Ok(q.dequantize());
        }
        match self.index.get(name) {
            Some(&i) => self.files[i].read(name, shape),
            None => Err(Error::MissingTensor {
                name: name.to_owned(),
                path: self.files.first().map(|f| f.path.clone()),
            }),
        }
    }
}

/// Deterministic random initialisation as transformers' `_init_weights` does it: projections and
/// embeddings `normal(0, initializer_range)`, biases zero, norms one, the padding row zero. Each
/// tensor draws from its own stream (seed, HF name), independent of burn's global RNG.
pub struct RandomInit {
    /// The seed.
    pub seed: u64,
    /// Standard deviation.
    pub std: f64,
    /// Embedding row to zero.
    pub pad_token_id: Option<u32>,
}

impl TensorSource for RandomInit {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        if name.ends_with("norm.weight") {
            return Ok(vec![1.0; n]);
        }
        if name.ends_with(".bias") {
            return Ok(vec![0.0; n]);
        }
        let mut v = Rng::for_stream(self.seed, name).normal_vec(n, 0.0, self.std);
        if name == "model.embed_tokens.weight"
            && let Some(pad) = self.pad_token_id
        {
            let (rows, cols) = (shape[0], shape[1]);
            if (pad as usize) < rows {
                v[pad as usize * cols..(pad as usize + 1) * cols].fill(0.0);
            }
        }
        Ok(v)
    }
}

impl<B: Backend> Llama<B> {
    /// A randomly initialised model (see [`RandomInit`]), identical for equal seeds.
    pub fn init(config: &ModelConfig, seed: u64, device: &B::Device, dtype: Dtype) -> Result<Self> {
        let mut src = RandomInit {
            seed,
            std: config.initializer_range,
            pad_token_id: config.pad_token_id,
        };
        Llama::from_source(config, &mut src, device, burn_dtype(dtype))
    }
}

/// A loaded model and what it was loaded from.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The model.
    pub model: Llama<B>,
    /// Its config (also at `model.config`).
    pub config: ModelConfig,
    /// Where it came from.
    pub format: ModelFormat,
}

/// Loads a model from a HF directory, a `.gguf` file, or a directory holding one `.gguf`.
pub fn load_model<B: Backend>(
    path: &Path,
    device: &B::Device,
    dtype: Dtype,
) -> Result<LoadedModel<B>> {
    load_model_with(path, device, dtype, BuildOptions::default())
}

/// [`load_model`], the decoder's projections stored as `options` says (quantised, or kept in a GGUF
/// file's blocks).
pub fn load_model_with<B: Backend>(
    path: &Path,
    device: &B::Device,
    dtype: Dtype,
    options: BuildOptions,
) -> Result<LoadedModel<B>> {
    let format = ModelFormat::detect(path)?;
    let (model, config) = match &format {
        ModelFormat::HfDir(dir) => {
            let config = ModelConfig::from_hf_file(&dir.join("config.json"))?;
            let mut src = SafetensorsSource::open_dir(dir)?;
            let model =
                Llama::from_source_with(&config, &mut src, device, burn_dtype(dtype), options)
                    .map_err(|e| e.at(dir))?;
            (model, config)
        }
        ModelFormat::Gguf(file) => {
            let gguf = GgufFile::open(file)?;
            let config = ModelConfig::from_gguf(&gguf).map_err(|e| e.at(file))?;
            let mut src = GgufSource::new(&gguf, &config);
            let model =
                Llama::from_source_with(&config, &mut src, device, burn_dtype(dtype), options)
                    .map_err(|e| e.at(file))?;
            (model, config)
        }
    };
    Ok(LoadedModel {
        model,
        config,
        format,
    })
}

/// Loads the tokenizer of a model path (see [`load_model`] for the accepted layouts).
pub fn load_tokenizer(path: &Path) -> Result<TokenizerBundle> {
    match ModelFormat::detect(path)? {
        ModelFormat::HfDir(dir) => TokenizerBundle::from_hf_dir(&dir),
        ModelFormat::Gguf(file) => {
            let gguf = GgufFile::open(&file)?;
            crate::gguf::tokenizer::tokenizer_from_gguf(&gguf).map_err(|e| e.at(&file))
        }
    }
}

/// Element type of saved safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SaveDtype {
    /// 32-bit float.
    #[default]
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    Bf16,
}

impl SaveDtype {
    fn torch_name(self) -> &'static str {
        match self {
            SaveDtype::F32 => "float32",
            SaveDtype::F16 => "float16",
            SaveDtype::Bf16 => "bfloat16",
        }
    }
}

struct OwnedView {
    dtype: StDtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &OwnedView {
    fn dtype(&self) -> StDtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn encode(values: &[f32], dtype: SaveDtype) -> (StDtype, Vec<u8>) {
    match dtype {
        SaveDtype::F32 => (
            StDtype::F32,
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ),
        SaveDtype::F16 => (
            StDtype::F16,
            values
                .iter()
                .flat_map(|v| f16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
        ),
        SaveDtype::Bf16 => (
            StDtype::BF16,
            values
                .iter()
                .flat_map(|v| bf16::from_f32(*v).to_bits().to_le_bytes())
                .collect(),
        ),
    }
}

/// Writes `named` tensors to a safetensors file with the `{"format": "pt"}` metadata transformers
/// expects.
pub fn write_safetensors(
    path: &Path,
    named: Vec<(String, Vec<f32>, Vec<usize>)>,
    dtype: SaveDtype,
) -> Result<()> {
    let views: Vec<(String, OwnedView)> = named
        .into_iter()
        .map(|(name, values, shape)| {
            let (dtype, data) = encode(&values, dtype);
            (name, OwnedView { dtype, shape, data })
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views.iter().map(|(n, v)| (n.as_str(), v)), Some(meta), path)
        .map_err(|source| Error::Safetensors {
            path: path.to_owned(),
            source,
        })
}

/// Saves `model` as a HF directory: `config.json` and `model.safetensors` with HF names.
///
/// LoRA adapters are not included (merge them first with [`Llama::merge_lora`], or save them with
/// [`Llama::lora_tensors`]).
pub fn save_hf<B: Backend>(model: &Llama<B>, dir: &Path, dtype: SaveDtype) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut config = model.config.clone();
    config.torch_dtype = Some(dtype.torch_name().into());
    let cfg_path = dir.join("config.json");
    let text =
        serde_json::to_string_pretty(&config.to_hf_json()).map_err(|source| Error::Json {
            path: cfg_path.clone(),
            source,
        })?;
    std::fs::write(&cfg_path, text + "\n").map_err(|e| Error::io(&cfg_path, e))?;
    let named = model
        .hf_tensors()
        .into_iter()
        .map(|(name, t)| {
            let (values, shape) = t.to_f32();
            (name, values, shape)
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), named, dtype)
}

/// A named tensor on the host: name, shape, row-major f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 are accepted), by name.
pub fn read_f32_tensors(path: &Path) -> Result<Vec<NamedTensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let st_err = |source| Error::Safetensors {
        path: path.to_owned(),
        source,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(st_err)?;
    let mut out = Vec::new();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    for name in names {
        let t = st.tensor(&name).map_err(st_err)?;
        let Some(values) = floats(t.dtype(), t.data()) else {
            return Err(Error::Unsupported(format!(
                "`{}`: tensor `{name}` has dtype {:?}; expected F32, F16 or BF16",
                path.display(),
                t.dtype()
            )));
        };
        out.push((name, t.shape().to_vec(), values));
    }
    Ok(out)
}
