//! Quantised frozen weights: a base projection stored in 4 or 8 bits (QLoRA) or in a GGUF file's own
//! blocks, dequantised one layer at a time inside the forward and backward passes.
//!
//! - [`bnb`]: bitsandbytes' NF4/FP4 blocks with (double-quantised) absmax scales, and row-wise int8.
//! - [`QuantizedMatrix`]: one `[out, in]` weight in any of those formats or a GGML block type
//!   (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), with [`QuantizedMatrix::dequantize`].
//! - [`QuantWeight`]: the shared, immutable matrix as a burn module without parameters (the
//!   `Quantized` variant of [`crate::linear::BaseWeight`]).
//! - [`op`]: `x · deq(W)ᵀ` as a burn operation. On the CPU it is a custom autodiff operation that keeps
//!   only the (shared) quantised matrix for its backward and dequantises again there, so no f32 copy
//!   of any frozen weight outlives the layer that uses it. It uses the same fixed-order matrix
//!   product as a dense layer, so a GGUF base kept in its blocks trains to the same bits as the same
//!   base dequantised at load.

pub mod bnb;
pub mod op;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;

use burn::module::{
    AutodiffModule, Content, Devices, EmptyRecord, Module, ModuleDisplay, ModuleDisplayDefault,
    ModuleMapper, ModuleVisitor,
};
use burn::tensor::backend::{AutodiffBackend, Backend};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gguf::quant::{GgmlType, can_dequantize, dequantize_into};
pub use bnb::FourBit;
pub use bnb::FourBitMatrix;
use bnb::Int8Matrix;

/// How training stores frozen projections (LLaMA-Factory's `quantization_bit`,
/// `quantization_type`, `double_quantization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum QuantSpec {
    /// 4-bit blocks of 64 with absmax scales.
    FourBit {
        /// NF4 or FP4.
        kind: FourBit,
        /// Double quantisation of the scales.
        double: bool,
    },
    /// Row-wise absmax int8 (weights only).
    Int8,
}

impl QuantSpec {
    /// From the manifest's keys: `bits` 4 or 8; `kind` and `double` apply to 4 bits.
    pub fn from_bits(bits: u8, kind: FourBit, double: bool) -> Result<QuantSpec> {
        match bits {
            4 => Ok(QuantSpec::FourBit { kind, double }),
            8 => Ok(QuantSpec::Int8),
            other => Err(Error::config(format!(
                "quantization_bit {other} is not supported\nhint: use 4 (NF4/FP4) or 8 (int8)"
            ))),
        }
    }

    /// Bits per weight, before scales.
    pub fn bits(self) -> u8 {
        match self {
            QuantSpec::FourBit { .. } => 4,
            QuantSpec::Int8 => 8,
        }
    }

    /// The fields of a Hugging Face `BitsAndBytesConfig` that describe this format, as lf records
    /// them beside a LoRA adapter trained on such a base (`quantization_config.json`).
    pub fn to_json(self) -> serde_json::Value {
        match self {
            QuantSpec::FourBit { kind, double } => serde_json::json!({
                "quant_method": "bitsandbytes",
                "load_in_4bit": true,
                "bnb_4bit_quant_type": kind.name(),
                "bnb_4bit_use_double_quant": double,
                "bnb_4bit_quant_storage": "uint8",
            }),
            QuantSpec::Int8 => serde_json::json!({
                "quant_method": "bitsandbytes",
                "load_in_8bit": true,
                "llm_int8_threshold": 0.0,
            }),
        }
    }

    /// The inverse of [`QuantSpec::to_json`].
    pub fn from_json(v: &serde_json::Value) -> Result<QuantSpec> {
        let flag = |k: &str| {
            v.get(k)
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
        };
        if flag("load_in_8bit") {
            return Ok(QuantSpec::Int8);
        }
        if !flag("load_in_4bit") {
            return Err(Error::config(
                "a quantization config needs `load_in_4bit` or `load_in_8bit`",
            ));
        }
        let kind = match v.get("bnb_4bit_quant_type").and_then(|t| t.as_str()) {
            None | Some("nf4") => FourBit::Nf4,
            Some("fp4") => FourBit::Fp4,
            Some(other) => {
                return Err(Error::config(format!(
                    "unknown bnb_4bit_quant_type `{other}`\nhint: nf4 or fp4"
                )));
            }
        };
        Ok(QuantSpec::FourBit {
            kind,
            double: flag("bnb_4bit_use_double_quant"),
        })
    }
}

impl fmt::Display for QuantSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuantSpec::FourBit { kind, double } => {
                write!(f, "{}", kind.name())?;
                if *double {
                    write!(f, " (double quantisation)")?;
                }
                Ok(())
            }
            QuantSpec::Int8 => write!(f, "int8"),
        }
    }
}

/// The storage of a [`QuantizedMatrix`].
#[derive(Debug, Clone, PartialEq)]
enum Data {
    FourBit(FourBitMatrix),
    Int8(Int8Matrix),
    /// GGML blocks, row after row (each row a whole number of blocks).
    Ggml {
        ty: GgmlType,
        bytes: Vec<u8>,
    },
}

/// One `[rows, cols]` weight matrix in a quantised format.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedMatrix {
    rows: usize,
    cols: usize,
    data: Data,
}

/// Elements dequantised per parallel task (a multiple of every block length).
const CHUNK: usize = 1 << 14;

impl QuantizedMatrix {
    /// Quantises a row-major `[rows, cols]` matrix.
    pub fn quantize(values: &[f32], rows: usize, cols: usize, spec: QuantSpec) -> Self {
        assert_eq!(values.len(), rows * cols, "values do not fill the shape");
        let data = match spec {
            QuantSpec::FourBit { kind, double } => {
                Data::FourBit(FourBitMatrix::quantize(values, kind, double))
            }
            QuantSpec::Int8 => Data::Int8(Int8Matrix::quantize(values, cols)),
        };
        QuantizedMatrix { rows, cols, data }
    }

    /// A matrix from bitsandbytes' 4-bit parts (a pre-quantised checkpoint).
    pub fn four_bit(m: FourBitMatrix, rows: usize, cols: usize) -> Result<Self> {
        m.check(rows * cols).map_err(Error::config)?;
        Ok(QuantizedMatrix {
            rows,
            cols,
            data: Data::FourBit(m),
        })
    }

    /// A matrix from bitsandbytes' int8 parts: the codes and the absmax of each row.
    pub fn int8(q: Vec<i8>, row_absmax: Vec<f32>, rows: usize, cols: usize) -> Result<Self> {
        if q.len() != rows * cols || row_absmax.len() != rows {
            return Err(Error::config(format!(
                "{} int8 codes and {} row scales do not make a [{rows}, {cols}] matrix",
                q.len(),
                row_absmax.len()
            )));
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            data: Data::Int8(Int8Matrix { q, row_absmax }),
        })
    }

    /// A matrix kept in the GGML blocks `bytes` of type `ty` (rows of `cols` elements).
    pub fn from_ggml(ty: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        let (block, _) = ty.block();
        if !can_dequantize(ty) || block == 1 {
            return Err(Error::Unsupported(format!(
                "keeping GGML type {ty} quantised; supported: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K"
            )));
        }
        if !cols.is_multiple_of(block as usize) || bytes.len() as u64 != ty.byte_size(rows * cols) {
            return Err(Error::gguf(format!(
                "{ty}: {} bytes do not hold {rows} rows of {cols}",
                bytes.len()
            )));
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            data: Data::Ggml { ty, bytes },
        })
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// Bytes the matrix holds.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::FourBit(m) => m.bytes(),
            Data::Int8(m) => m.bytes(),
            Data::Ggml { bytes, .. } => bytes.len(),
        }
    }

    /// The format, for messages: `nf4`, `fp4`, `int8` or the GGML type.
    pub fn format(&self) -> String {
        match &self.data {
            Data::FourBit(m) => m.kind.name().to_string(),
            Data::Int8(_) => "int8".to_string(),
            Data::Ggml { ty, .. } => ty.to_string().to_lowercase(),
        }
    }

    /// The row-major f32 values. Rows are dequantised in parallel chunks; each value depends on its
    /// own codes and scale only, so the result does not depend on the thread count.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let rows_per_chunk = (CHUNK / self.cols).max(1);
        let chunk = rows_per_chunk * self.cols;
        match &self.data {
            Data::FourBit(m) => {
                let scales = m.absmax.values();
                out.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(i, o)| m.dequantize_into(&scales, i * chunk, o));
            }
            Data::Int8(m) => {
                out.par_chunks_mut(chunk)
                    .enumerate()
                    .for_each(|(i, o)| m.dequantize_into(self.cols, i * chunk, o));
            }
            Data::Ggml { ty, bytes } => {
                let row_bytes = ty.byte_size(self.cols) as usize;
                out.par_chunks_mut(chunk)
                    .zip(bytes.par_chunks(rows_per_chunk * row_bytes))
                    .for_each(|(o, b)| {
                        dequantize_into(*ty, b, o).expect("validated by from_ggml");
                    });
            }
        }
        out
    }
}

/// A quantised matrix shared by every clone of a model (a burn module without parameters: it has
/// no gradient and no record, and lives on the host).
#[derive(Clone, Debug)]
pub struct QuantWeight(pub Arc<QuantizedMatrix>);

impl QuantWeight {
    /// Wraps a matrix.
    pub fn new(m: QuantizedMatrix) -> Self {
        QuantWeight(Arc::new(m))
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        self.0.dims()
    }
}

impl fmt::Display for QuantWeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, c] = self.dims();
        write!(f, "{} [{r}, {c}]", self.0.format())
    }
}

// A module without parameters or record (what burn's `empty!` macro writes for constants).
impl<B: Backend> Module<B> for QuantWeight {
    type Record = EmptyRecord;

    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    fn map<M: ModuleMapper<B>>(self, _mapper: &mut M) -> Self {
        self
    }

    fn load_record(self, _record: Self::Record) -> Self {
        self
    }

    fn into_record(self) -> Self::Record {
        EmptyRecord::new()
    }

    fn to_device(self, _device: &B::Device) -> Self {
        self
    }

    fn fork(self, _device: &B::Device) -> Self {
        self
    }

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        devices
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for QuantWeight {
    type InnerModule = QuantWeight;

    fn valid(&self) -> Self::InnerModule {
        self.clone()
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        module
    }
}

impl ModuleDisplayDefault for QuantWeight {
    fn content(&self, content: Content) -> Option<Content> {
        content.add_formatted(&self.to_string()).optional()
    }
}

impl ModuleDisplay for QuantWeight {}
