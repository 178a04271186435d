//! [`Trainer`]: a model with some parameters marked trainable, gradient accumulation, clipping by the
//! global norm, and AdamW with PyTorch's semantics, all written over the model's own parameters so
//! the optimizer state can be checkpointed in our format and restored bit for bit.
//!
//! AdamW (`torch.optim.AdamW`, single-tensor form, `amsgrad=False`), for parameter `p`, gradient `g`
//! and step `t`:
//!
//! ```text
//! p ← p·(1 − lr·wd)                      (decoupled weight decay)
//! m ← m + (g − m)·(1 − β₁)               (torch's lerp)
//! v ← v·β₂ + g²·(1 − β₂)
//! p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
//! ```
//!
//! State is kept in f32. When the model computes in another dtype (bf16 on CUDA), the optimizer keeps
//! an f32 master copy of each trained parameter and writes its rounded value into the model after every
//! step (mixed precision).

use burn::module::Param;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, ElementConversion, Tensor, TensorData};

use super::loss::{LmBatch, lm_loss_sum};
use super::params::{Method, ParamMut, decays, visit_params};
use lf_model::value_head::{self, ValueHead};
use lf_model::{Llama, ops};

/// AdamW hyper-parameters (the learning rate comes with each step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
    /// Decay every parameter (PyTorch's default for one parameter group) instead of the weight
    /// matrices only (the transformers Trainer's rule, see [`decays`]).
    pub decay_all: bool,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decay_all: false,
        }
    }
}

/// The optimizer state of one trained parameter.
struct Slot<I: Backend> {
    name: String,
    shape: Vec<usize>,
    decay: bool,
    /// Steps this parameter was updated (PyTorch counts per parameter).
    step: u64,
    /// First moment, f32, flat.
    m: Tensor<I, 1>,
    /// Second moment, f32, flat.
    v: Tensor<I, 1>,
    /// f32 master weights when the model's dtype is not f32.
    master: Option<Tensor<I, 1>>,
    /// Accumulated gradient, f32, flat.
    grad: Option<Tensor<I, 1>>,
    /// The dtype the parameter is stored in.
    dtype: DType,
}

/// A tensor of the optimizer state or a trained parameter, on the host, for checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Name (`param/NAME`, `exp_avg/NAME`, `exp_avg_sq/NAME`).
    pub name: String,
    /// Values.
    pub values: Vec<f32>,
    /// Shape.
    pub shape: Vec<usize>,
}

/// Reads one saved tensor by name and expected shape.
pub type TensorReader<'a> = dyn FnMut(&str, &[usize]) -> anyhow::Result<Vec<f32>> + 'a;

/// A model being trained.
pub struct Trainer<B: AutodiffBackend> {
    /// The model; trained parameters require gradients, the others do not.
    pub model: Llama<B>,
    /// A reward model's value head (always trained), after the model's parameters in walk order.
    pub head: Option<ValueHead<B>>,
    slots: Vec<Slot<B::InnerBackend>>,
    adamw: AdamW,
}

fn flat_inner<B: AutodiffBackend, const D: usize>(
    p: &Param<Tensor<B, D>>,
) -> Tensor<B::InnerBackend, 1> {
    let t = p.val().inner();
    let n = t.shape().num_elements();
    ops::cast(t.reshape([n]), DType::F32)
}

fn set_param<B: AutodiffBackend, const D: usize>(
    p: &mut Param<Tensor<B, D>>,
    flat: Tensor<B::InnerBackend, 1>,
    dtype: DType,
) {
    let shape = p.val().shape();
    let t = Tensor::<B, D>::from_inner(ops::cast(flat, dtype).reshape(shape)).require_grad();
    *p = Param::initialized(p.id, t);
}

fn grad_of<B: AutodiffBackend, const D: usize>(
    p: &Param<Tensor<B, D>>,
    grads: &B::Gradients,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let g = p.val().grad(grads)?;
    let n = g.shape().num_elements();
    Some(ops::cast(g.reshape([n]), DType::F32))
}

fn shape_of<B: Backend, const D: usize>(p: &Param<Tensor<B, D>>) -> Vec<usize> {
    p.val().dims().to_vec()
}

/// Calls `f(name, param)` for every parameter of `model`, then of `head`, in a fixed order.
fn visit_all<B: Backend>(
    model: &mut Llama<B>,
    head: &mut Option<ValueHead<B>>,
    f: &mut dyn FnMut(&str, ParamMut<'_, B>),
) {
    visit_params(model, f);
    if let Some(h) = head {
        f(value_head::WEIGHT, ParamMut::R2(&mut h.weight));
        f(value_head::BIAS, ParamMut::R1(&mut h.bias));
    }
}

fn new_slot<I: Backend>(
    name: &str,
    shape: Vec<usize>,
    value: Tensor<I, 1>,
    dtype: DType,
    decay: bool,
    device: &I::Device,
) -> Slot<I> {
    let n = shape.iter().product::<usize>();
    let zeros = || Tensor::<I, 1>::zeros([n], (device, DType::F32));
    Slot {
        name: name.to_string(),
        shape,
        decay,
        step: 0,
        m: zeros(),
        v: zeros(),
        master: (dtype != DType::F32).then_some(value),
        grad: None,
        dtype,
    }
}

impl<B: AutodiffBackend> Trainer<B> {
    /// Prepares `model` for `method`: attaches LoRA adapters (drawn from `seed`), marks what is trained,
    /// and creates zeroed optimizer state.
    pub fn new(
        model: Llama<B>,
        method: &Method,
        adamw: AdamW,
        seed: u64,
    ) -> lf_model::Result<Self> {
        let mut model = match method {
            Method::Lora(cfg) => model.with_lora(cfg, seed)?,
            _ => model,
        };
        let dtype = model.dtype;
        let layers = model.layers.len();
        let device = model.device();
        let mut slots = Vec::new();
        visit_params(&mut model, &mut |name, p| {
            let trained = method.trains(name, layers);
            let (shape, value) = match p {
                ParamMut::R1(p) => {
                    *p = p.clone().set_require_grad(trained);
                    (shape_of(p), trained.then(|| flat_inner(p)))
                }
                ParamMut::R2(p) => {
                    *p = p.clone().set_require_grad(trained);
                    (shape_of(p), trained.then(|| flat_inner(p)))
                }
            };
            if let Some(value) = value {
                let decay = adamw.decay_all || decays(name);
                slots.push(new_slot(name, shape, value, dtype, decay, &device));
            }
        });
        Ok(Trainer {
            model,
            head: None,
            slots,
            adamw,
        })
    }

    /// Adds a value head, trained along with the model (its parameters are f32 whatever the model's
    /// dtype).
    pub fn with_value_head(mut self, head: ValueHead<B>) -> Self {
        let device = self.model.device();
        let mut head = Some(head);
        let h = head.as_mut().expect("just set");
        let adamw = self.adamw;
        for (name, p) in [
            (value_head::WEIGHT, ParamMut::R2(&mut h.weight)),
            (value_head::BIAS, ParamMut::R1(&mut h.bias)),
        ] {
            let (shape, value) = match p {
                ParamMut::R1(p) => {
                    *p = p.clone().set_require_grad(true);
                    (shape_of(p), flat_inner(p))
                }
                ParamMut::R2(p) => {
                    *p = p.clone().set_require_grad(true);
                    (shape_of(p), flat_inner(p))
                }
            };
            let decay = adamw.decay_all || decays(name);
            self.slots
                .push(new_slot(name, shape, value, DType::F32, decay, &device));
        }
        self.head = head;
        self
    }

    /// Names of the trained parameters, in walk order.
    pub fn trained_names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Number of trained scalars.
    pub fn trained_params(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.shape.iter().product::<usize>())
            .sum()
    }

    /// Runs one micro-batch forward and backward and adds its gradient, the summed loss divided by
    /// `denom` (the trained tokens of the whole accumulated batch), to the accumulated gradients.
    /// Returns the summed (undivided) loss, or `None` when the batch scores no token.
    pub fn accumulate(&mut self, batch: &LmBatch, denom: f64) -> Option<f64> {
        let loss = lm_loss_sum(&self.model, batch)?;
        Some(self.backward(loss, denom))
    }

    /// Adds the gradient of `loss / denom` (a one-element tensor computed from [`Trainer::model`] and
    /// [`Trainer::head`]) to the accumulated gradients. Returns the value of `loss`.
    pub fn backward(&mut self, loss: Tensor<B, 1>, denom: f64) -> f64 {
        let value: f64 = loss.clone().inner().into_scalar().elem();
        let grads = loss.div_scalar(denom).backward();
        let slots = &mut self.slots;
        let mut k = 0;
        visit_all(&mut self.model, &mut self.head, &mut |name, p| {
            let Some(slot) = slots.get_mut(k).filter(|s| s.name == name) else {
                return;
            };
            k += 1;
            let g = match p {
                ParamMut::R1(p) => grad_of(p, &grads),
                ParamMut::R2(p) => grad_of(p, &grads),
            };
            if let Some(g) = g {
                slot.grad = Some(match slot.grad.take() {
                    Some(acc) => acc + g,
                    None => g,
                });
            }
        });
        value
    }

    /// The L2 norm of all accumulated gradients together (`clip_grad_norm_`'s total norm).
    pub fn grad_norm(&self) -> f64 {
        let sums: Vec<Tensor<B::InnerBackend, 1>> = self
            .slots
            .iter()
            .filter_map(|s| s.grad.as_ref())
            .map(|g| lf_model::fixed_order::sum_all(g.clone().square()))
            .collect();
        if sums.is_empty() {
            return 0.0;
        }
        let total: f64 = lf_model::fixed_order::sum_all(Tensor::cat(sums, 0))
            .into_scalar()
            .elem();
        total.sqrt()
    }

    /// Clips the accumulated gradients to `max_norm` (if positive), applies one AdamW step with
    /// learning rate `lr`, and clears the gradients. Returns the gradient norm before clipping.
    pub fn step(&mut self, lr: f64, max_norm: f64) -> f64 {
        let norm = self.grad_norm();
        // torch: clip_coef = max_norm / (total_norm + 1e-6), applied when below 1.
        let coef = max_norm / (norm + 1e-6);
        let clip = max_norm > 0.0 && coef < 1.0;
        let a = self.adamw;
        for slot in &mut self.slots {
            let Some(mut g) = slot.grad.take() else {
                continue;
            };
            if clip {
                g = g.mul_scalar(coef);
            }
            slot.step += 1;
            let t = slot.step as i32;
            let bc1 = 1.0 - a.beta1.powi(t);
            let bc2 = 1.0 - a.beta2.powi(t);
            slot.m = slot.m.clone() + (g.clone() - slot.m.clone()).mul_scalar(1.0 - a.beta1);
            slot.v = slot.v.clone().mul_scalar(a.beta2) + (g.clone() * g).mul_scalar(1.0 - a.beta2);
            let denom = slot
                .v
                .clone()
                .sqrt()
                .div_scalar(bc2.sqrt())
                .add_scalar(a.eps);
            let update = (slot.m.clone() / denom).mul_scalar(lr / bc1);
            slot.grad = Some(update);
        }
        // Apply the updates to the parameters (weight decay first, as torch does).
        let slots = &mut self.slots;
        let wd = a.weight_decay;
        let mut k = 0;
        visit_all(&mut self.model, &mut self.head, &mut |name, p| {
            let Some(slot) = slots.get_mut(k).filter(|s| s.name == name) else {
                return;
            };
            k += 1;
            let Some(update) = slot.grad.take() else {
                return;
            };
            let current = match (&slot.master, &p) {
                (Some(m), _) => m.clone(),
                (None, ParamMut::R1(p)) => flat_inner(p),
                (None, ParamMut::R2(p)) => flat_inner(p),
            };
            let decayed = if slot.decay && wd != 0.0 {
                current.mul_scalar(1.0 - lr * wd)
            } else {
                current
            };
            let new = decayed - update;
            if slot.master.is_some() {
                slot.master = Some(new.clone());
            }
            match p {
                ParamMut::R1(p) => set_param(p, new, slot.dtype),
                ParamMut::R2(p) => set_param(p, new, slot.dtype),
            }
        });
        norm
    }

    /// The summed loss and the number of scored tokens of `batch`, without gradients.
    pub fn eval_loss(&self, batch: &LmBatch) -> (f64, usize) {
        use burn::module::AutodiffModule;
        let model = self.model.valid();
        match lm_loss_sum(&model, batch) {
            Some(loss) => (loss.into_scalar().elem(), batch.n_scored()),
            None => (0.0, 0),
        }
    }

    /// Trained parameters (f32 master values) and optimizer moments, for a checkpoint; the per-parameter
    /// step counts come separately.
    pub fn export_state(&mut self) -> (Vec<HostTensor>, Vec<u64>) {
        let mut out = Vec::new();
        let mut params = Vec::new();
        let slots = &self.slots;
        let mut k = 0;
        visit_all(&mut self.model, &mut self.head, &mut |name, p| {
            let Some(slot) = slots.get(k).filter(|s| s.name == name) else {
                return;
            };
            k += 1;
            let value = match (&slot.master, p) {
                (Some(m), _) => m.clone(),
                (None, ParamMut::R1(p)) => flat_inner(p),
                (None, ParamMut::R2(p)) => flat_inner(p),
            };
            params.push(value);
        });
        for (slot, value) in self.slots.iter().zip(params) {
            for (kind, t) in [
                ("param", value),
                ("exp_avg", slot.m.clone()),
                ("exp_avg_sq", slot.v.clone()),
            ] {
                out.push(HostTensor {
                    name: format!("{kind}/{}", slot.name),
                    values: to_vec(t),
                    shape: slot.shape.clone(),
                });
            }
        }
        (out, self.slots.iter().map(|s| s.step).collect())
    }

    /// Restores what [`Trainer::export_state`] returned; `get(name, shape)` reads one tensor.
    pub fn import_state(
        &mut self,
        steps: &[u64],
        get: &mut TensorReader<'_>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            steps.len() == self.slots.len(),
            "the checkpoint has {} trained parameters, the model {}",
            steps.len(),
            self.slots.len()
        );
        let device = self.model.device();
        let flat = |v: Vec<f32>| {
            let n = v.len();
            Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(v, [n]), (&device, DType::F32))
        };
        let mut values = Vec::new();
        for (slot, &step) in self.slots.iter_mut().zip(steps) {
            let n = [slot.shape.iter().product::<usize>()];
            slot.step = step;
            slot.m = flat(get(&format!("exp_avg/{}", slot.name), &slot.shape)?);
            slot.v = flat(get(&format!("exp_avg_sq/{}", slot.name), &slot.shape)?);
            let value = flat(get(&format!("param/{}", slot.name), &slot.shape)?);
            debug_assert_eq!(value.dims(), n);
            if slot.master.is_some() {
                slot.master = Some(value.clone());
            }
            slot.grad = None;
            values.push(value);
        }
        let slots = &self.slots;
        let mut values = values.into_iter();
        let mut k = 0;
        visit_all(&mut self.model, &mut self.head, &mut |name, p| {
            if slots.get(k).is_none_or(|s| s.name != name) {
                return;
            }
            k += 1;
            let v = values.next().expect("one value per slot");
            match p {
                ParamMut::R1(p) => set_param(p, v, slots[k - 1].dtype),
                ParamMut::R2(p) => set_param(p, v, slots[k - 1].dtype),
            }
        });
        Ok(())
    }
}

/// The values of a flat f32 tensor.
pub fn to_vec<I: Backend>(t: Tensor<I, 1>) -> Vec<f32> {
    ops::cast(t, DType::F32)
        .into_data()
        .to_vec::<f32>()
        .expect("f32 tensor")
}
