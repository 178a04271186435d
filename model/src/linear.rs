//! [`Linear`]: a projection with a (freezable) base weight, an optional bias, and an optional LoRA
//! adapter computed beside the base.
//!
//! The adapter adds `(dropout(x) · Aᵀ) · Bᵀ · scale` to the base output; the dense `W + B·A` is never
//! formed, so a step costs two thin matmuls and the base can stay frozen, or quantised
//! ([`BaseWeight::Quantized`], QLoRA).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};

use crate::ops;
use crate::quant::{QuantSpec, QuantWeight, QuantizedMatrix};
use crate::rng::Rng;

/// The frozen-able base weight of a [`Linear`], stored as HF does: `[out, in]`.
#[derive(Module, Debug)]
pub enum BaseWeight<B: Backend> {
    /// A plain float matrix.
    Dense(Param<Tensor<B, 2>>),
    /// A frozen matrix in a quantised format, dequantised inside each product.
    Quantized(QuantWeight),
}

impl<B: Backend> BaseWeight<B> {
    /// `x · Wᵀ`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            BaseWeight::Dense(w) => ops::linear(x, w.val()),
            BaseWeight::Quantized(w) => crate::quant::op::linear(x, w),
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        match self {
            BaseWeight::Dense(w) => w.val().dims(),
            BaseWeight::Quantized(w) => w.dims(),
        }
    }

    /// The weight as a dense float tensor (dequantised for quantised variants, on `device` in
    /// `dtype`).
    pub fn to_dense_on(&self, device: &B::Device, dtype: DType) -> Tensor<B, 2> {
        match self {
            BaseWeight::Dense(w) => w.val(),
            BaseWeight::Quantized(w) => {
                Tensor::from_data(TensorData::new(w.0.dequantize(), w.dims()), (device, dtype))
            }
        }
    }

    /// The dense weight, or `None` for a quantised one.
    pub fn dense(&self) -> Option<Tensor<B, 2>> {
        match self {
            BaseWeight::Dense(w) => Some(w.val()),
            BaseWeight::Quantized(_) => None,
        }
    }

    /// The quantised matrix, or `None` for a dense weight.
    pub fn quantized(&self) -> Option<&QuantizedMatrix> {
        match self {
            BaseWeight::Dense(_) => None,
            BaseWeight::Quantized(w) => Some(&w.0),
        }
    }

    fn set_require_grad(self, require_grad: bool) -> Self {
        match self {
            BaseWeight::Dense(w) => BaseWeight::Dense(w.set_require_grad(require_grad)),
            // Always frozen.
            BaseWeight::Quantized(w) => BaseWeight::Quantized(w),
        }
    }
}

/// The projections of a decoder layer, by their Hugging Face names, in layer order.
pub const LINEAR_MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// How to attach LoRA adapters (peft's `LoraConfig`, the parts that change the math).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of `A` (`[r, in]`) and `B` (`[out, r]`).
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f64,
    /// Dropout on the adapter's input during training.
    pub dropout: f64,
    /// rsLoRA: scale by `alpha / sqrt(r)` instead of `alpha / r`.
    pub rslora: bool,
    /// Module names to adapt (`q_proj`, `v_proj`, ...); `all-linear` adapts every projection.
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// The factor the adapter output is multiplied by.
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether the projection called `module` (e.g. `q_proj`) gets an adapter.
    pub fn targets(&self, module: &str) -> bool {
        self.targets
            .iter()
            .any(|t| t == module || t == "all-linear" || t == "all_linear")
    }
}

/// A LoRA adapter: `A` `[r, in]`, `B` `[out, r]` (peft's `lora_A.weight` / `lora_B.weight`).
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// Down projection `[r, in]`.
    pub a: Param<Tensor<B, 2>>,
    /// Up projection `[out, r]`.
    pub b: Param<Tensor<B, 2>>,
    /// Dropout on the input (active only on autodiff backends).
    pub dropout: Dropout,
    /// Output scale (`alpha / r` or `alpha / sqrt(r)`).
    pub scale: f64,
}

impl<B: Backend> LoraAdapter<B> {
    /// peft's default initialisation: `A` Kaiming-uniform (bound `1/sqrt(in)`), `B` zeros, so the
    /// adapted layer starts equal to the base. `A` is drawn from the stream `name` under `seed`.
    pub fn init(
        cfg: &LoraConfig,
        in_features: usize,
        out_features: usize,
        name: &str,
        seed: u64,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let bound = 1.0 / (in_features as f64).sqrt();
        let a = Rng::for_stream(seed, &format!("{name}.lora_A.weight")).uniform_vec(
            cfg.rank * in_features,
            -bound,
            bound,
        );
        let a = Tensor::from_data(TensorData::new(a, [cfg.rank, in_features]), (device, dtype));
        let b = Tensor::zeros([out_features, cfg.rank], (device, dtype));
        LoraAdapter {
            a: Param::from_tensor(a),
            b: Param::from_tensor(b),
            dropout: DropoutConfig::new(cfg.dropout).init(),
            scale: cfg.scale(),
        }
    }

    /// `(dropout(x) · Aᵀ) · Bᵀ · scale`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let h = ops::linear(self.dropout.forward(x), self.a.val());
        ops::linear(h, self.b.val()).mul_scalar(self.scale)
    }

    /// The dense update `B · A · scale` (`[out, in]`), for merging into the base.
    pub fn delta(&self) -> Tensor<B, 2> {
        ops::matmul(self.b.val(), self.a.val()).mul_scalar(self.scale)
    }
}

/// A linear projection `y = x · Wᵀ + b (+ LoRA)`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// The base weight `[out, in]`.
    pub base: BaseWeight<B>,
    /// Optional bias `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Optional LoRA adapter.
    pub lora: Option<LoraAdapter<B>>,
}

impl<B: Backend> Linear<B> {
    /// A dense linear layer from its weight `[out, in]` and optional bias `[out]`.
    pub fn dense(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Linear {
            base: BaseWeight::Dense(Param::from_tensor(weight)),
            bias: bias.map(Param::from_tensor),
            lora: None,
        }
    }

    /// Applies the layer.
    ///
    /// # Shapes
    /// - `x`: `[..., in]`
    /// - output: `[..., out]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // Same order as peft: (x·Wᵀ + b) + lora(x).
        let (mut y, lora_in) = match &self.lora {
            Some(_) => (self.base.forward(x.clone()), Some(x)),
            None => (self.base.forward(x), None),
        };
        if let Some(bias) = &self.bias {
            y = y + bias.val().unsqueeze::<D>();
        }
        match (&self.lora, lora_in) {
            (Some(lora), Some(x)) => y + lora.forward(x),
            _ => y,
        }
    }

    /// `[out, in]`.
    pub fn dims(&self) -> [usize; 2] {
        self.base.dims()
    }

    /// Stops (or restarts) gradients for the base weight and bias; the adapter is unaffected.
    pub fn freeze_base(mut self, frozen: bool) -> Self {
        self.base = self.base.set_require_grad(!frozen);
        self.bias = self.bias.map(|b| b.set_require_grad(!frozen));
        self
    }

    /// Attaches a fresh adapter on `device` in `dtype` (replacing any existing one).
    pub fn with_lora(
        mut self,
        cfg: &LoraConfig,
        name: &str,
        seed: u64,
        device: &B::Device,
        dtype: DType,
    ) -> Self {
        let [out, inp] = self.dims();
        self.lora = Some(LoraAdapter::init(cfg, inp, out, name, seed, device, dtype));
        self
    }

    /// Folds the adapter into the base (`W + B·A·scale`, a quantised base dequantised first) and
    /// drops it. The merged weight is a new dense leaf (detached from the adapter), so on an autodiff
    /// backend it can be trained in turn.
    pub fn merge_lora(mut self) -> Self {
        if let Some(lora) = self.lora.take() {
            let delta = lora.delta();
            let w = self.base.to_dense_on(&delta.device(), delta.dtype());
            let merged = w.clone() + ops::cast(delta, w.dtype());
            self.base = BaseWeight::Dense(Param::from_tensor(merged.detach()));
        }
        self
    }

    /// Stores a dense base in `spec`'s format (frozen); a quantised base is left as it is.
    pub fn quantize(mut self, spec: QuantSpec) -> Self {
        if let Some(w) = self.base.dense() {
            let [rows, cols] = w.dims();
            let values = w
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .unwrap_or_default();
            self.base = BaseWeight::Quantized(QuantWeight::new(QuantizedMatrix::quantize(
                &values, rows, cols, spec,
            )));
        }
        self
    }

    /// Replaces a quantised base by its dequantised values as a dense weight on `device` in `dtype`
    /// (the same function, computed faster and in more memory).
    pub fn dequantize(mut self, device: &B::Device, dtype: DType) -> Self {
        if self.base.quantized().is_some() {
            let w = self.base.to_dense_on(device, dtype);
            self.base = BaseWeight::Dense(Param::from_tensor(w));
        }
        self
    }
}
