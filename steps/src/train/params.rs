//! Named access to every parameter of a [`Llama`], and which of them a fine-tuning method trains.
//!
//! Names are the Hugging Face ones (`model.layers.0.self_attn.q_proj.weight`), and PEFT's for adapters
//! (`model.layers.0.self_attn.q_proj.lora_A.weight`). The walk order is fixed, so optimizer state and
//! gradients can be kept in plain vectors aligned with it.

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use lf_model::linear::{BaseWeight, Linear};
use lf_model::{Llama, LoraConfig};

/// A mutable parameter of rank 1 (norms, biases) or 2 (matrices).
pub enum ParamMut<'a, B: Backend> {
    /// A vector.
    R1(&'a mut Param<Tensor<B, 1>>),
    /// A matrix.
    R2(&'a mut Param<Tensor<B, 2>>),
}

/// Calls `f(name, param)` for every parameter of `model`, in a fixed order.
pub fn visit_params<B: Backend>(model: &mut Llama<B>, f: &mut dyn FnMut(&str, ParamMut<'_, B>)) {
    f(
        "model.embed_tokens.weight",
        ParamMut::R2(&mut model.embed_tokens),
    );
    for (i, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{i}");
        let attn = &mut layer.self_attn;
        for (name, lin) in [
            ("self_attn.q_proj", &mut attn.q_proj),
            ("self_attn.k_proj", &mut attn.k_proj),
            ("self_attn.v_proj", &mut attn.v_proj),
            ("self_attn.o_proj", &mut attn.o_proj),
        ] {
            visit_linear(&format!("{p}.{name}"), lin, f);
        }
        if let Some(n) = attn.q_norm.as_mut() {
            f(
                &format!("{p}.self_attn.q_norm.weight"),
                ParamMut::R1(&mut n.weight),
            );
        }
        if let Some(n) = attn.k_norm.as_mut() {
            f(
                &format!("{p}.self_attn.k_norm.weight"),
                ParamMut::R1(&mut n.weight),
            );
        }
        let mlp = &mut layer.mlp;
        for (name, lin) in [
            ("mlp.gate_proj", &mut mlp.gate_proj),
            ("mlp.up_proj", &mut mlp.up_proj),
            ("mlp.down_proj", &mut mlp.down_proj),
        ] {
            visit_linear(&format!("{p}.{name}"), lin, f);
        }
        f(
            &format!("{p}.input_layernorm.weight"),
            ParamMut::R1(&mut layer.input_layernorm.weight),
        );
        f(
            &format!("{p}.post_attention_layernorm.weight"),
            ParamMut::R1(&mut layer.post_attention_layernorm.weight),
        );
    }
    f("model.norm.weight", ParamMut::R1(&mut model.norm.weight));
    if let Some(head) = model.lm_head.as_mut() {
        visit_linear("lm_head", head, f);
    }
}

fn visit_linear<B: Backend>(
    prefix: &str,
    lin: &mut Linear<B>,
    f: &mut dyn FnMut(&str, ParamMut<'_, B>),
) {
    match &mut lin.base {
        BaseWeight::Dense(w) => f(&format!("{prefix}.weight"), ParamMut::R2(w)),
        // No parameter: always frozen.
        BaseWeight::Quantized(_) => {}
    }
    if let Some(b) = lin.bias.as_mut() {
        f(&format!("{prefix}.bias"), ParamMut::R1(b));
    }
    if let Some(lora) = lin.lora.as_mut() {
        f(
            &format!("{prefix}.lora_A.weight"),
            ParamMut::R2(&mut lora.a),
        );
        f(
            &format!("{prefix}.lora_B.weight"),
            ParamMut::R2(&mut lora.b),
        );
    }
}

/// The projections of a decoder layer that LoRA can adapt, by their short names.
pub use lf_model::linear::LINEAR_MODULES;

/// The parts of a decoder layer `freeze.trainable_modules` may name (besides `all`).
pub const LAYER_MODULES: [&str; 11] = [
    "self_attn",
    "mlp",
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "input_layernorm",
    "post_attention_layernorm",
];

/// The modules outside the layers `freeze.extra_modules` may name.
pub const EXTRA_MODULES: [&str; 3] = ["embed_tokens", "norm", "lm_head"];

/// Which parameters a fine-tuning method trains.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Every parameter.
    Full,
    /// Some layers and modules.
    Freeze(FreezeSpec),
    /// LoRA adapters only.
    Lora(LoraConfig),
}

/// `finetuning_type: freeze` resolved against a model.
#[derive(Debug, Clone, PartialEq)]
pub struct FreezeSpec {
    /// `n > 0`: the last `n` layers; `n < 0`: the first `-n`.
    pub trainable_layers: i64,
    /// Parts of those layers (`all`, `self_attn`, `q_proj`, ...).
    pub trainable_modules: Vec<String>,
    /// `embed_tokens`, `norm`, `lm_head`.
    pub extra_modules: Vec<String>,
}

impl FreezeSpec {
    /// Whether layer `layer` of `num_layers` is trained.
    pub fn layer_trained(&self, layer: usize, num_layers: usize) -> bool {
        let n = self.trainable_layers;
        if n >= 0 {
            layer + (n as usize).min(num_layers) >= num_layers
        } else {
            layer < n.unsigned_abs() as usize
        }
    }
}

impl Method {
    /// Whether the parameter `name` (see [`visit_params`]) is trained in a model of `num_layers` layers.
    pub fn trains(&self, name: &str, num_layers: usize) -> bool {
        match self {
            Method::Full => true,
            Method::Lora(_) => name.contains(".lora_A.") || name.contains(".lora_B."),
            Method::Freeze(spec) => {
                if let Some(rest) = name.strip_prefix("model.layers.") {
                    let (layer, rest) = rest.split_once('.').unwrap_or((rest, ""));
                    let layer: usize = layer.parse().unwrap_or(usize::MAX);
                    if !spec.layer_trained(layer, num_layers) {
                        return false;
                    }
                    spec.trainable_modules.iter().any(|m| {
                        m == "all"
                            || rest.starts_with(&format!("{m}."))
                            || rest.contains(&format!(".{m}."))
                    })
                } else {
                    let module = if name.starts_with("lm_head.") {
                        "lm_head"
                    } else if name == "model.embed_tokens.weight" {
                        "embed_tokens"
                    } else {
                        "norm"
                    };
                    spec.extra_modules.iter().any(|m| m == module)
                }
            }
        }
    }
}

/// Whether AdamW's weight decay applies to `name`: not to biases and norm weights (the transformers
/// Trainer's rule).
pub fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.ends_with("norm.weight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freeze_selects_layers_and_modules() {
        let spec = FreezeSpec {
            trainable_layers: 1,
            trainable_modules: vec!["mlp".into(), "q_proj".into()],
            extra_modules: vec!["norm".into()],
        };
        let m = Method::Freeze(spec);
        assert!(m.trains("model.layers.3.mlp.up_proj.weight", 4));
        assert!(m.trains("model.layers.3.self_attn.q_proj.weight", 4));
        assert!(!m.trains("model.layers.3.self_attn.k_proj.weight", 4));
        assert!(!m.trains("model.layers.2.mlp.up_proj.weight", 4));
        assert!(m.trains("model.norm.weight", 4));
        assert!(!m.trains("model.embed_tokens.weight", 4));
        assert!(!m.trains("lm_head.weight", 4));
        let first = Method::Freeze(FreezeSpec {
            trainable_layers: -1,
            trainable_modules: vec!["all".into()],
            extra_modules: vec![],
        });
        assert!(first.trains("model.layers.0.input_layernorm.weight", 4));
        assert!(!first.trains("model.layers.1.input_layernorm.weight", 4));
    }

    #[test]
    fn no_decay_on_biases_and_norms() {
        assert!(decays("model.layers.0.mlp.up_proj.weight"));
        assert!(decays("model.embed_tokens.weight"));
        assert!(!decays("model.layers.0.self_attn.q_proj.bias"));
        assert!(!decays("model.layers.0.input_layernorm.weight"));
        assert!(!decays("model.layers.0.self_attn.q_norm.weight"));
        assert!(!decays("model.norm.weight"));
    }
}
