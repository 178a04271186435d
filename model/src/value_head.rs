//! [`ValueHead`]: the scalar head of a reward model, `r = w · h + b` on the final hidden state (after the
//! last norm) of a sequence's last token, stored as TRL and LLaMA-Factory store it.
//!
//! `value_head.safetensors` holds `v_head.summary.weight` `[1, hidden]` and `v_head.summary.bias` `[1]`
//! (f32), beside the weights of a full model or the adapter of a LoRA artifact.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Int, Tensor, TensorData};

use crate::llama::{ForwardInput, Llama};
use crate::load::{SaveDtype, read_f32_tensors, write_safetensors};
use crate::ops;
use crate::rng::Rng;

/// The file name, beside the weights (LLaMA-Factory's).
pub const VALUE_HEAD: &str = "value_head.safetensors";
/// The weight's name in the file.
pub const WEIGHT: &str = "v_head.summary.weight";
/// The bias's name in the file.
pub const BIAS: &str = "v_head.summary.bias";

/// A linear map from the hidden state to one number.
#[derive(Module, Debug)]
pub struct ValueHead<B: Backend> {
    /// `[1, hidden]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[1]`.
    pub bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> ValueHead<B> {
    /// A fresh head as `torch.nn.Linear` draws one (weight uniform in `±1/√hidden`, from `seed`), with a
    /// zero bias (the pairwise loss does not see the bias).
    pub fn init(hidden: usize, seed: u64, device: &B::Device) -> Self {
        let bound = 1.0 / (hidden as f64).sqrt();
        let w = Rng::for_stream(seed, WEIGHT).uniform_vec(hidden, -bound, bound);
        Self::from_values(w, 0.0, device)
    }

    /// A head with the given weight (`[hidden]`) and bias.
    pub fn from_values(weight: Vec<f32>, bias: f32, device: &B::Device) -> Self {
        let h = weight.len();
        ValueHead {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(weight, [1, h]),
                (device, DType::F32),
            )),
            bias: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![bias], [1]),
                (device, DType::F32),
            )),
        }
    }

    /// Reads `value_head.safetensors`: `v_head.summary.weight` `[1, hidden]` and
    /// `v_head.summary.bias` `[1]` (TRL / LLaMA-Factory), or `score.weight` (transformers'
    /// sequence-classification head).
    pub fn read(path: &Path, hidden: usize, device: &B::Device) -> anyhow::Result<Self> {
        let tensors = read_f32_tensors(path)?;
        let find = |suffixes: &[&str]| {
            tensors
                .iter()
                .find(|(n, _, _)| suffixes.iter().any(|s| n.ends_with(s)))
        };
        let (name, _, weight) = find(&["summary.weight", "score.weight", "v_head.weight"])
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "`{}` has no `v_head.summary.weight` (tensors: {})",
                    path.display(),
                    tensors
                        .iter()
                        .map(|(n, _, _)| format!("`{n}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        anyhow::ensure!(
            weight.len() == hidden,
            "`{}`: `{name}` has {} values; the model's hidden size is {hidden}",
            path.display(),
            weight.len()
        );
        let bias = find(&["summary.bias", "score.bias", "v_head.bias"])
            .and_then(|(_, _, b)| b.first().copied())
            .unwrap_or(0.0);
        Ok(Self::from_values(weight.clone(), bias, device))
    }

    /// The bias, on the host.
    pub fn bias_value(&self) -> anyhow::Result<f32> {
        let v = self
            .bias
            .val()
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| anyhow::anyhow!("cannot read the value head's bias: {e:?}"))?;
        Ok(v[0])
    }

    /// Writes the head as `value_head.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let values = |t: Tensor<B, 1>| {
            t.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 data")
        };
        let w = self.weight.val();
        let h = w.dims()[1];
        let named = vec![
            (WEIGHT.to_string(), values(w.reshape([h])), vec![1, h]),
            (BIAS.to_string(), values(self.bias.val()), vec![1]),
        ];
        write_safetensors(&dir.join(VALUE_HEAD), named, SaveDtype::F32)?;
        Ok(())
    }

    /// The score of each row of `hidden` at its last real token (`lens[r] − 1`; rows are right-padded).
    ///
    /// # Shapes
    /// - `hidden`: `[rows, cols, hidden]`
    /// - output: `[rows]` (f32)
    pub fn score_last(&self, hidden: Tensor<B, 3>, lens: &[usize]) -> Tensor<B, 1> {
        let [rows, cols, width] = hidden.dims();
        let device = hidden.device();
        let idx: Vec<i64> = lens
            .iter()
            .enumerate()
            .map(|(r, &n)| (r * cols + n.clamp(1, cols) - 1) as i64)
            .collect();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(idx, [rows]), &device);
        let last = ops::cast(
            hidden.reshape([rows * cols, width]).select(0, idx),
            DType::F32,
        );
        let w = self.weight.val().transpose();
        (ops::matmul(last, w) + self.bias.val().unsqueeze::<2>()).reshape([rows])
    }

    /// Runs `model` on `input` and scores each row at its last real token (`lens[r] − 1`).
    ///
    /// # Shapes
    /// - output: `[rows]`
    pub fn score(&self, model: &Llama<B>, input: ForwardInput<B>, lens: &[usize]) -> Tensor<B, 1> {
        let hidden = model.forward_hidden(input, None);
        self.score_last(hidden, lens)
    }
}
