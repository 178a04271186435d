//! A GGUF (v2/v3) reader: header, metadata key/values, tensor infos, alignment, and dequantisation
//! of the GGML block formats F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K and Q6_K.
//!
//! Every read is bounds-checked against the file: a truncated or corrupted file gives
//! [`Error::Gguf`], never a panic or a huge allocation. The layouts follow ggml's
//! `ggml-common.h` / `ggml-quants.c`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::error::{Error, Result};
use super::load::Bytes;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
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

/// A GGML tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit float.
    F64,
    /// 32 weights: f16 scale, 32 × 4-bit, offset 8.
    Q4_0,
    /// 32 weights: f16 scale and min, 32 × 4-bit.
    Q4_1,
    /// 32 weights, 5-bit (size known, not dequantised).
    Q5_0,
    /// 32 weights, 5-bit with min (size known, not dequantised).
    Q5_1,
    /// 32 weights: f16 scale, 32 × i8.
    Q8_0,
    /// 32 weights, 8-bit with sum (size known, not dequantised).
    Q8_1,
    /// k-quant 2-bit (size known, not dequantised).
    Q2_K,
    /// k-quant 3-bit (size known, not dequantised).
    Q3_K,
    /// k-quant 4-bit: 256 weights in 8 sub-blocks with 6-bit scales and mins.
    Q4_K,
    /// k-quant 5-bit (size known, not dequantised).
    Q5_K,
    /// k-quant 6-bit: 256 weights in 16 sub-blocks with i8 scales.
    Q6_K,
    /// k-quant 8-bit (size known, not dequantised).
    Q8_K,
    /// 8-bit integer.
    I8,
    /// 16-bit integer.
    I16,
    /// 32-bit integer.
    I32,
    /// 64-bit integer.
    I64,
}

impl GgmlType {
    /// From the id stored in the file.
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            _ => return None,
        })
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            F64 | I64 => (1, 8),
            I8 => (1, 1),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
        }
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
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

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantises `n` elements of type `ty` stored in `bytes` to f32.
///
/// `bytes` must hold exactly the `n / block_elems` blocks of the type.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let (be, bb) = ty.block();
    let (be, bb) = (be as usize, bb as usize);
    if !n.is_multiple_of(be) || bytes.len() != n / be * bb {
        return Err(Error::gguf(format!(
            "{ty}: {} bytes do not hold {n} elements",
            bytes.len()
        )));
    }
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (j, v) in y.iter_mut().enumerate() {
                    *v = (b[2 + j] as i8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(18)) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                for j in 0..16 {
                    y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
                    y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (y, b) in out.chunks_exact_mut(32).zip(bytes.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qs = &b[4..20];
                for j in 0..16 {
                    y[j] = (qs[j] & 0x0F) as f32 * d + m;
                    y[j + 16] = (qs[j] >> 4) as f32 * d + m;
                }
            }
        }
        GgmlType::Q4_K => {
            for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(144)) {
                dequant_q4_k_block(b, y);
            }
        }
        GgmlType::Q6_K => {
            for (y, b) in out.chunks_exact_mut(256).zip(bytes.chunks_exact(210)) {
                dequant_q6_k_block(b, y);
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "dequantising GGML type {other}; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q6_K"
            )));
        }
    }
    Ok(out)
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K block (ggml's `get_scale_min_k4`).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Q4_K block: `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`.
fn dequant_q4_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 0);
    let dmin = f16_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for chunk in 0..4 {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, m1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, m2) = (d * sc2 as f32, dmin * m2 as f32);
        let q = &qs[32 * chunk..32 * chunk + 32];
        let out = &mut y[64 * chunk..64 * chunk + 64];
        for l in 0..32 {
            out[l] = d1 * (q[l] & 0x0F) as f32 - m1;
            out[l + 32] = d2 * (q[l] >> 4) as f32 - m2;
        }
    }
}

/// Q6_K block: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
fn dequant_q6_k_block(b: &[u8], y: &mut [f32]) {
    let d = f16_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let out = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            out[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            out[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            out[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            out[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

impl GgufValue {
    /// The value's type id in a GGUF file.
    pub fn type_id(&self) -> u32 {
        match self {
            GgufValue::U8(_) => 0,
            GgufValue::I8(_) => 1,
            GgufValue::U16(_) => 2,
            GgufValue::I16(_) => 3,
            GgufValue::U32(_) => 4,
            GgufValue::I32(_) => 5,
            GgufValue::F32(_) => 6,
            GgufValue::Bool(_) => 7,
            GgufValue::String(_) => 8,
            GgufValue::Array(_) => 9,
            GgufValue::U64(_) => 10,
            GgufValue::I64(_) => 11,
            GgufValue::F64(_) => 12,
        }
    }

    /// Appends the value as a GGUF file stores it (without its type id).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            GgufValue::U8(x) => out.push(*x),
            GgufValue::I8(x) => out.push(*x as u8),
            GgufValue::U16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I16(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::U32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F32(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::Bool(x) => out.push(u8::from(*x)),
            GgufValue::String(s) => encode_str(out, s),
            GgufValue::Array(a) => {
                // An empty array's element type is irrelevant; strings are what empty arrays usually are.
                let elem = a.first().map_or(8, GgufValue::type_id);
                out.extend_from_slice(&elem.to_le_bytes());
                out.extend_from_slice(&(a.len() as u64).to_le_bytes());
                for x in a {
                    x.encode(out);
                }
            }
            GgufValue::U64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::I64(x) => out.extend_from_slice(&x.to_le_bytes()),
            GgufValue::F64(x) => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

/// Appends a GGUF string: its byte length as u64, then the UTF-8 bytes.
pub fn encode_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Writes a GGUF v3 file holding `metadata` and f32/f16 tensors (for tests and small exports).
///
/// Tensors are `(name, hf_shape, ggml_type, raw bytes)`; the bytes must match the type and shape.
pub fn write_gguf(
    metadata: &[(String, GgufValue)],
    tensors: &[(String, Vec<usize>, GgmlType, Vec<u8>)],
) -> Vec<u8> {
    fn id_of(t: GgmlType) -> u32 {
        (0..31)
            .find(|&i| GgmlType::from_id(i) == Some(t))
            .unwrap_or(0)
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        encode_str(&mut out, k);
        out.extend_from_slice(&v.type_id().to_le_bytes());
        v.encode(&mut out);
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for (name, shape, ty, bytes) in tensors {
        encode_str(&mut out, name);
        out.extend_from_slice(&(shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&id_of(*ty).to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + bytes.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    }
    let data_start = (out.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    out.resize(data_start as usize, 0);
    for ((_, _, _, bytes), off) in tensors.iter().zip(offsets) {
        out.resize((data_start + off) as usize, 0);
        out.extend_from_slice(bytes);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn dequant_f32_f16_bf16() {
        let v = [1.5f32, -2.25, 0.0, 1e-3];
        let b32: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &b32, 4).unwrap(), v);
        let b16: Vec<u8> = v.iter().flat_map(|&x| h(x)).collect();
        let got = dequantize(GgmlType::F16, &b16, 4).unwrap();
        for (g, x) in got.iter().zip(v) {
            assert_eq!(*g, f16::from_f32(x).to_f32());
        }
        let bb: Vec<u8> = v
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        let got = dequantize(GgmlType::BF16, &bb, 4).unwrap();
        for (g, x) in got.iter().zip(v) {
            assert_eq!(*g, bf16::from_f32(x).to_f32());
        }
    }

    #[test]
    fn dequant_q8_0() {
        let mut b = h(0.5).to_vec();
        b.extend((0..32).map(|j| (j as i8 - 16) as u8));
        let got = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        for (j, g) in got.iter().enumerate() {
            assert_eq!(*g, (j as f32 - 16.0) * 0.5);
        }
    }

    #[test]
    fn dequant_q4_0() {
        let mut b = h(2.0).to_vec();
        // byte j: low nibble j (element j), high nibble 15 - j (element j + 16).
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = dequantize(GgmlType::Q4_0, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(got[j], (j as f32 - 8.0) * 2.0);
            assert_eq!(got[j + 16], ((15 - j) as f32 - 8.0) * 2.0);
        }
    }

    #[test]
    fn dequant_q4_1() {
        let mut b = h(0.25).to_vec();
        b.extend(h(-1.0));
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        for j in 0..16 {
            assert_eq!(got[j], j as f32 * 0.25 - 1.0);
            assert_eq!(got[j + 16], (15 - j) as f32 * 0.25 - 1.0);
        }
    }

    #[test]
    fn dequant_q4_k() {
        // Sub-block s (0..8) gets scale s + 1 and min s; packed as ggml's 12-byte layout.
        let sc: Vec<u8> = (1..=8).collect();
        let mn: Vec<u8> = (0..8).collect();
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = sc[j] & 63;
            scales[j + 4] = mn[j] & 63;
        }
        for j in 4..8 {
            scales[j + 4] = (sc[j] & 0x0F) | ((mn[j] & 0x0F) << 4);
            scales[j - 4] |= (sc[j] >> 4) << 6;
            scales[j] |= (mn[j] >> 4) << 6;
        }
        let mut b = h(0.5).to_vec();
        b.extend(h(0.25));
        b.extend(scales);
        // Element e of sub-block s has quant (e + s) % 16.
        let mut qs = [0u8; 128];
        for chunk in 0..4 {
            for l in 0..32 {
                let lo = ((l + 2 * chunk) % 16) as u8;
                let hi = ((l + 2 * chunk + 1) % 16) as u8;
                qs[32 * chunk + l] = lo | (hi << 4);
            }
        }
        b.extend(qs);
        let got = dequantize(GgmlType::Q4_K, &b, 256).unwrap();
        for s in 0..8 {
            for l in 0..32 {
                let q = ((l + s) % 16) as f32;
                let want = 0.5 * sc[s] as f32 * q - 0.25 * mn[s] as f32;
                assert_eq!(got[32 * s + l], want, "sub-block {s} element {l}");
            }
        }
        // Scales above 15 exercise the high bits of the packing.
        let mut scales2 = scales;
        scales2[0] |= 1 << 6; // sub-block 4 scale += 16
        let mut b2 = b.clone();
        b2[4..16].copy_from_slice(&scales2);
        let got2 = dequantize(GgmlType::Q4_K, &b2, 256).unwrap();
        let want = 0.5 * (sc[4] + 16) as f32 * 4.0 - 0.25 * mn[4] as f32;
        assert_eq!(got2[128], want);
    }

    #[test]
    fn dequant_q6_k() {
        // Element e (0..256) gets quant q(e) = (e * 7) % 64 and sub-block scale (e / 16) - 8.
        let q = |e: usize| ((e * 7) % 64) as u8;
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for half in 0..2 {
            for l in 0..32 {
                let base = 128 * half;
                let (q1, q2, q3, q4) = (
                    q(base + l),
                    q(base + l + 32),
                    q(base + l + 64),
                    q(base + l + 96),
                );
                ql[64 * half + l] = (q1 & 0x0F) | ((q3 & 0x0F) << 4);
                ql[64 * half + l + 32] = (q2 & 0x0F) | ((q4 & 0x0F) << 4);
                qh[32 * half + l] =
                    (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
            }
        }
        let scales: Vec<u8> = (0..16).map(|s| (s as i8 - 8) as u8).collect();
        let mut b = ql.to_vec();
        b.extend(qh);
        b.extend(scales);
        b.extend(h(0.125));
        let got = dequantize(GgmlType::Q6_K, &b, 256).unwrap();
        for (e, g) in got.iter().enumerate() {
            let want = 0.125 * ((e / 16) as f32 - 8.0) * (q(e) as f32 - 32.0);
            assert_eq!(*g, want, "element {e}");
        }
    }

    #[test]
    fn dequant_rejects_wrong_sizes_and_unsupported_types() {
        assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err());
        assert!(dequantize(GgmlType::Q4_0, &[0; 18], 31).is_err());
        assert!(matches!(
            dequantize(GgmlType::Q5_K, &[0; 176], 256),
            Err(Error::Unsupported(_))
        ));
    }

    fn sample_file() -> Vec<u8> {
        let meta = vec![
            (
                "general.architecture".to_string(),
                GgufValue::String("llama".into()),
            ),
            ("a.u8".into(), GgufValue::U8(7)),
            ("a.i16".into(), GgufValue::I16(-3)),
            ("a.f64".into(), GgufValue::F64(2.5)),
            ("a.bool".into(), GgufValue::Bool(true)),
            (
                "a.arr".into(),
                GgufValue::Array(vec![
                    GgufValue::String("x".into()),
                    GgufValue::String("yz".into()),
                ]),
            ),
            (
                "a.nested".into(),
                GgufValue::Array(vec![GgufValue::Array(vec![
                    GgufValue::I32(1),
                    GgufValue::I32(-2),
                ])]),
            ),
        ];
        let w: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let w16: Vec<u8> = (0..4).flat_map(|i| h(i as f32)).collect();
        write_gguf(
            &meta,
            &[
                ("w".into(), vec![2, 3], GgmlType::F32, w),
                ("v".into(), vec![4], GgmlType::F16, w16),
            ],
        )
    }

    #[test]
    fn reads_all_value_types_and_tensors() {
        let f = GgufFile::from_bytes(sample_file()).unwrap();
        assert_eq!(f.version, 3);
        assert_eq!(f.meta_str("general.architecture"), Some("llama"));
        assert_eq!(f.meta_u64("a.u8"), Some(7));
        assert_eq!(f.meta("a.i16").unwrap().as_i64(), Some(-3));
        assert_eq!(f.meta_f64("a.f64"), Some(2.5));
        assert_eq!(f.meta_bool("a.bool"), Some(true));
        assert_eq!(f.meta_array_len("a.arr"), Some(2));
        let nested = f.meta("a.nested").unwrap().as_array().unwrap();
        assert_eq!(nested[0].as_array().unwrap()[1].as_i64(), Some(-2));
        let (w, shape) = f.dequantize("w").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(w, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (v, _) = f.dequantize("v").unwrap();
        assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0]);
    }

    #[test]
    fn truncated_or_corrupted_never_panics() {
        let full = sample_file();
        for cut in 0..full.len() {
            let r = GgufFile::from_bytes(full[..cut].to_vec());
            assert!(r.is_err(), "truncation at {cut} parsed");
        }
        for i in 0..full.len() {
            for flip in [0x01u8, 0x80, 0xFF] {
                let mut b = full.clone();
                b[i] ^= flip;
                if let Ok(f) = GgufFile::from_bytes(b) {
                    for t in f.tensors.clone() {
                        let _ = f.dequantize(&t.name);
                    }
                }
            }
        }
    }
}
