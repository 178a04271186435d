//! Reading GGUF (v2/v3) files: header, metadata key/values, tensor infos and alignment.
//!
//! Every read is bounds-checked against the file: a truncated or corrupted file gives
//! [`Error::Gguf`], never a panic or a huge allocation. The layouts follow ggml's
//! `ggml-common.h` / `ggml-quants.c`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::quant::{GgmlType, dequantize};
use crate::error::{Error, Result};
use crate::load::Bytes;

pub(crate) const MAGIC: &[u8; 4] = b"GGUF";
pub(crate) const DEFAULT_ALIGNMENT: u64 = 32;
const MAX_DIMS: usize = 4;
const MAX_ARRAY_NESTING: usize = 3;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `UINT8`.
    U8(u8),
    /// `INT8`.
    I8(i8),
    /// `UINT16`.
    U16(u16),
    /// `INT16`.
    I16(i16),
    /// `UINT32`.
    U32(u32),
    /// `INT32`.
    I32(i32),
    /// `FLOAT32`.
    F32(f32),
    /// `BOOL`.
    Bool(bool),
    /// `STRING`.
    String(String),
    /// `ARRAY` of values of one type.
    Array(Vec<GgufValue>),
    /// `UINT64`.
    U64(u64),
    /// `INT64`.
    I64(i64),
    /// `FLOAT64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(v.into()),
            GgufValue::U16(v) => Some(v.into()),
            GgufValue::U32(v) => Some(v.into()),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            GgufValue::I8(v) => Some(v.into()),
            GgufValue::I16(v) => Some(v.into()),
            GgufValue::I32(v) => Some(v.into()),
            GgufValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    /// The value as a float (integers convert).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v.into()),
            GgufValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    /// The value as a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            GgufValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The elements, if an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where a tensor lives in the file and how it is stored.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// GGUF name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions in GGML order: `dims[0]` is the contiguous one (the HF shape reversed).
    pub dims: Vec<u64>,
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Offset from the start of the tensor data section.
    pub offset: u64,
    /// Number of elements.
    pub n_elements: u64,
    /// Number of bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The shape in PyTorch/HF order (slowest dimension first).
    pub fn hf_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file; tensor data stays in the (memory-mapped) bytes until dequantised.
pub struct GgufFile {
    path: Option<PathBuf>,
    bytes: Bytes,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, GgufValue)>,
    meta_index: HashMap<String, usize>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    /// Alignment of the tensor data.
    pub alignment: u64,
    /// Absolute offset of the tensor data section.
    pub data_offset: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8]> {
        let remaining = (self.buf.len() - self.pos) as u64;
        if n > remaining {
            return Err(Error::gguf(format!(
                "truncated: {what} needs {n} bytes at offset {} but only {remaining} remain",
                self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        let s = self.take(len, what)?;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn value(&mut self, ty: u32, depth: usize, what: &str) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.u8(what)?),
            1 => GgufValue::I8(self.u8(what)? as i8),
            2 => GgufValue::U16(self.u16(what)?),
            3 => GgufValue::I16(self.u16(what)? as i16),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(self.u32(what)? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32(what)?)),
            7 => match self.u8(what)? {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(Error::gguf(format!(
                        "{what}: invalid bool byte {b} at offset {}",
                        self.pos - 1
                    )));
                }
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_NESTING {
                    return Err(Error::gguf(format!("{what}: arrays nested too deeply")));
                }
                let elem_ty = self.u32(what)?;
                let len = self.u64(what)?;
                let min = min_value_size(elem_ty).ok_or_else(|| {
                    Error::gguf(format!("{what}: unknown array element type {elem_ty}"))
                })?;
                // Refuse lengths the rest of the file cannot hold before allocating for them.
                if len.saturating_mul(min) > self.remaining() {
                    return Err(Error::gguf(format!(
                        "truncated: {what} claims {len} elements at offset {} but only {} bytes remain",
                        self.pos,
                        self.remaining()
                    )));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(elem_ty, depth + 1, what)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(self.u64(what)? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64(what)?)),
            other => {
                return Err(Error::gguf(format!(
                    "{what}: unknown value type {other} at offset {}",
                    self.pos
                )));
            }
        })
    }
}

/// The fewest bytes a value of type `ty` occupies (for sanity-checking array lengths).
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

impl GgufFile {
    /// Opens and parses a GGUF file (memory-mapped).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = Bytes::map(path)?;
        Self::parse(bytes, Some(path.to_owned())).map_err(|e| e.at(path))
    }

    /// Parses a GGUF file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::parse(Bytes::Owned(bytes), None)
    }

    fn parse(bytes: Bytes, path: Option<PathBuf>) -> Result<Self> {
        let buf: &[u8] = &bytes;
        let mut c = Cursor { buf, pos: 0 };
        let magic = c.array::<4>("magic")?;
        if &magic != MAGIC {
            return Err(Error::gguf(format!(
                "bad magic {magic:02x?}; not a GGUF file"
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::gguf(format!(
                "unsupported GGUF version {version}; versions 2 and 3 are supported"
            )));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 24.
        if n_kv.saturating_mul(13) > c.remaining() || n_tensors.saturating_mul(24) > c.remaining() {
            return Err(Error::gguf(format!(
                "header claims {n_kv} metadata entries and {n_tensors} tensors, more than the file can hold"
            )));
        }

        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut meta_index = HashMap::new();
        for _ in 0..n_kv {
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata type")?;
            let value = c.value(ty, 0, &format!("metadata `{key}`"))?;
            meta_index.insert(key.clone(), metadata.len());
            metadata.push((key, value));
        }

        let alignment = match meta_index.get("general.alignment") {
            Some(&i) => {
                let a = metadata[i].1.as_u64().unwrap_or(0);
                if a == 0 || !a.is_power_of_two() {
                    return Err(Error::gguf(format!(
                        "`general.alignment` must be a power of two, got {a}"
                    )));
                }
                a
            }
            None => DEFAULT_ALIGNMENT,
        };

        let mut tensors = Vec::with_capacity(n_tensors as usize);
        let mut tensor_index = HashMap::new();
        for _ in 0..n_tensors {
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor rank")? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::gguf(format!(
                    "tensor `{name}` has rank {n_dims}; expected 1 to {MAX_DIMS}"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                dims.push(c.u64("tensor dimension")?);
            }
            let type_id = c.u32("tensor type")?;
            let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
                Error::gguf(format!("tensor `{name}` has unknown GGML type {type_id}"))
            })?;
            let offset = c.u64("tensor offset")?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| Error::gguf(format!("tensor `{name}`: element count overflows")))?;
            let (block_elems, block_bytes) = ggml_type.block();
            if dims[0] % block_elems != 0 {
                return Err(Error::gguf(format!(
                    "tensor `{name}`: row length {} is not a multiple of the {ggml_type} block size {block_elems}",
                    dims[0]
                )));
            }
            let n_bytes = (n_elements / block_elems)
                .checked_mul(block_bytes)
                .ok_or_else(|| Error::gguf(format!("tensor `{name}`: byte size overflows")))?;
            if offset % alignment != 0 {
                return Err(Error::gguf(format!(
                    "tensor `{name}`: offset {offset} is not aligned to {alignment}"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(Error::gguf(format!("duplicate tensor `{name}`")));
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
                n_elements,
                n_bytes,
            });
        }

        let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        for t in &tensors {
            let end = data_offset
                .checked_add(t.offset)
                .and_then(|s| s.checked_add(t.n_bytes));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::gguf(format!(
                        "truncated: tensor `{}` ({} bytes at data offset {}) extends past the end of the file ({file_len} bytes)",
                        t.name, t.n_bytes, t.offset
                    )));
                }
            }
        }

        Ok(GgufFile {
            path,
            bytes,
            version,
            metadata,
            meta_index,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    /// The file this was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&GgufValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.meta(key)?.as_str()
    }

    /// A non-negative integer metadata value.
    pub fn meta_u64(&self, key: &str) -> Option<u64> {
        self.meta(key)?.as_u64()
    }

    /// A numeric metadata value.
    pub fn meta_f64(&self, key: &str) -> Option<f64> {
        self.meta(key)?.as_f64()
    }

    /// A bool metadata value.
    pub fn meta_bool(&self, key: &str) -> Option<bool> {
        self.meta(key)?.as_bool()
    }

    /// Length of an array metadata value.
    pub fn meta_array_len(&self, key: &str) -> Option<usize> {
        self.meta(key)?.as_array().map(<[_]>::len)
    }

    /// Every tensor's info, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// A tensor's info by GGUF name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw stored bytes of a tensor (bounds were checked when parsing).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.bytes[start..start + info.n_bytes as usize]
    }

    /// A tensor dequantised to f32, with its shape in HF order.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let info = self
            .tensor(name)
            .ok_or_else(|| Error::gguf(format!("no tensor `{name}`")))?;
        let data = dequantize(
            info.ggml_type,
            self.tensor_bytes(info),
            info.n_elements as usize,
        )
        .map_err(|e| match e {
            Error::Unsupported(m) => Error::Unsupported(format!("tensor `{name}`: {m}")),
            other => other,
        })?;
        Ok((data, info.hf_shape()))
    }
}
