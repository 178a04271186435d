//! Training against PyTorch goldens, and the properties the loop relies on: training lowers the loss,
//! frozen weights stay put, accumulation equals a bigger batch, checkpoints restore exactly.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde_json::Value as Json;

use super::artifact::{BaseOut, write_lora};
use super::loss::{IGNORE, LmBatch};
use super::params::{FreezeSpec, Method};
use super::trainer::{AdamW, Trainer};
use crate::data::Batch;
use lf_model::linear::LoraConfig;
use lf_model::{
    Cpu, CpuAutodiff, CpuDevice, Dtype, ForwardInput, Llama, ModelArtifact, load_model,
};

type AD = CpuAutodiff;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn tiny(name: &str) -> Llama<AD> {
    load_model::<AD>(&fixtures().join("tiny").join(name), &CpuDevice, Dtype::F32)
        .unwrap()
        .model
}

fn ints(v: &Json) -> Vec<Vec<i64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect()
}

/// A batch from rows of ids and labels (right-padded with id 0, label -100).
fn batch(ids: &[Vec<i64>], labels: &[Vec<i64>]) -> Batch {
    let cols = ids.iter().map(Vec::len).max().unwrap();
    let rows = ids.len();
    let mut b = Batch {
        shape: [rows, cols],
        input_ids: vec![0; rows * cols],
        labels: vec![IGNORE; rows * cols],
        attention_mask: vec![0; rows * cols],
        position_ids: vec![0; rows * cols],
        segment_ids: vec![0; rows * cols],
    };
    for r in 0..rows {
        for (t, (&id, &l)) in ids[r].iter().zip(&labels[r]).enumerate() {
            b.input_ids[r * cols + t] = id as u32;
            b.labels[r * cols + t] = l as i32;
            b.attention_mask[r * cols + t] = 1;
            b.position_ids[r * cols + t] = t as u32;
            b.segment_ids[r * cols + t] = 1;
        }
    }
    b
}

fn golden() -> (Json, LmBatch) {
    let text = std::fs::read_to_string(fixtures().join("tiny/llama/train_golden.json")).unwrap();
    let g: Json = serde_json::from_str(&text).unwrap();
    let mask = ints(&g["attention_mask"]);
    let ids: Vec<Vec<i64>> = ints(&g["input_ids"])
        .into_iter()
        .zip(&mask)
        .map(|(r, m)| {
            r.into_iter()
                .zip(m)
                .filter(|(_, m)| **m == 1)
                .map(|(x, _)| x)
                .collect()
        })
        .collect();
    let labels: Vec<Vec<i64>> = ints(&g["labels"])
        .into_iter()
        .zip(&ids)
        .map(|(l, r)| l[..r.len()].to_vec())
        .collect();
    let b = batch(&ids, &labels);
    // The golden's padding and ours must agree.
    assert_eq!(
        b.input_ids,
        ints(&g["input_ids"])
            .concat()
            .iter()
            .map(|&x| x as u32)
            .collect::<Vec<_>>()
    );
    (g, LmBatch::new(&b, false))
}

/// LoRA rank 4, alpha 8, on every linear layer.
fn lora_all_linear() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: vec!["all-linear".into()],
    }
}

fn mean_loss(t: &mut Trainer<AD>, b: &LmBatch) -> f64 {
    let (sum, n) = t.eval_loss(b);
    sum / n as f64
}

fn torch_adamw(g: &Json) -> AdamW {
    let a = &g["adamw"];
    AdamW {
        beta1: a["betas"][0].as_f64().unwrap(),
        beta2: a["betas"][1].as_f64().unwrap(),
        eps: a["eps"].as_f64().unwrap(),
        weight_decay: a["weight_decay"].as_f64().unwrap(),
        decay_all: true,
    }
}

#[test]
fn loss_grad_norm_and_one_adamw_step_match_torch() {
    let (g, b) = golden();
    assert_eq!(b.n_scored(), g["n_loss_tokens"].as_u64().unwrap() as usize);
    let lr = g["adamw"]["lr"].as_f64().unwrap();
    for (clip, want_after) in [(0.0, "loss_after_step"), (1.0, "loss_after_step_clip1")] {
        let mut t = Trainer::new(tiny("llama"), &Method::Full, torch_adamw(&g), 0).unwrap();
        let n = b.n_scored() as f64;
        let loss = t.accumulate(&b, n).unwrap() / n;
        let want = g["loss"].as_f64().unwrap();
        assert!((loss - want).abs() < 1e-5, "loss {loss} vs torch {want}");
        let norm = t.grad_norm();
        let want = g["grad_norm_f64"].as_f64().unwrap();
        assert!(
            (norm - want).abs() < 1e-5 * want,
            "grad norm {norm} vs torch {want}"
        );
        assert_eq!(t.step(lr, clip), norm);
        let after = mean_loss(&mut t, &b);
        let want = g[want_after].as_f64().unwrap();
        assert!(
            (after - want).abs() < 1e-4,
            "{want_after}: {after} vs torch {want}"
        );
    }
}

fn train_steps(t: &mut Trainer<AD>, b: &LmBatch, steps: usize, lr: f64) -> Vec<f64> {
    (0..steps)
        .map(|_| {
            let n = b.n_scored() as f64;
            let l = t.accumulate(b, n).unwrap() / n;
            t.step(lr, 1.0);
            l
        })
        .collect()
}

#[test]
fn full_and_lora_steps_lower_the_loss() {
    let (_, b) = golden();
    let mut full = Trainer::new(tiny("llama"), &Method::Full, AdamW::default(), 0).unwrap();
    let losses = train_steps(&mut full, &b, 3, 1e-3);
    assert!(mean_loss(&mut full, &b) < losses[0], "{losses:?}");
    let lora = Method::Lora(lora_all_linear());
    let mut t = Trainer::new(tiny("llama"), &lora, AdamW::default(), 0).unwrap();
    assert_eq!(t.trained_names().len(), 2 * 7 * 2);
    assert!(t.trained_names().iter().all(|n| n.contains(".lora_")));
    let losses = train_steps(&mut t, &b, 3, 1e-2);
    let after = mean_loss(&mut t, &b);
    assert!(after < losses[0] - 0.01, "{losses:?} → {after}");
}

fn weights<B: Backend>(m: &Llama<B>) -> Vec<(String, Vec<f32>)> {
    m.hf_tensors()
        .into_iter()
        .map(|(n, t)| (n, t.to_f32().0))
        .collect()
}

#[test]
fn freezing_keeps_frozen_weights_bit_identical() {
    let (_, b) = golden();
    let before = weights(&tiny("qwen2"));
    let method = Method::Freeze(FreezeSpec {
        trainable_layers: 1,
        trainable_modules: vec!["mlp".into(), "q_proj".into()],
        extra_modules: vec!["norm".into()],
    });
    let mut t = Trainer::new(tiny("qwen2"), &method, AdamW::default(), 0).unwrap();
    train_steps(&mut t, &b, 2, 1e-2);
    let after = weights(&t.model);
    let layers = t.model.layers.len();
    let mut trained = 0;
    for ((name, a), (_, z)) in before.iter().zip(&after) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        if method.trains(name, layers) {
            assert_ne!(bits(a), bits(z), "{name} did not train");
            trained += 1;
        } else {
            assert_eq!(bits(a), bits(z), "frozen {name} changed");
        }
    }
    // gate/up/down, q weight and bias of the last layer, and the final norm.
    assert_eq!(trained, 6);
}

#[test]
fn accumulating_micro_batches_equals_one_big_batch() {
    let rows: Vec<Vec<i64>> = vec![
        vec![1, 23, 54, 87, 120, 9, 200, 31],
        vec![1, 77, 15, 230, 4],
        vec![1, 5, 6, 7, 8, 9, 10, 11, 12, 13],
        vec![1, 99, 98],
    ];
    let labels: Vec<Vec<i64>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, &x)| if i < 2 { -100 } else { x })
                .collect()
        })
        .collect();
    let whole = LmBatch::new(&batch(&rows, &labels), false);
    let halves = [
        LmBatch::new(&batch(&rows[..2], &labels[..2]), false),
        LmBatch::new(&batch(&rows[2..], &labels[2..]), false),
    ];
    let mut one = Trainer::new(tiny("llama"), &Method::Full, AdamW::default(), 0).unwrap();
    let n = whole.n_scored() as f64;
    let l1 = one.accumulate(&whole, n).unwrap();
    let g1 = one.grad_norm();
    one.step(1e-3, 1.0);
    let mut two = Trainer::new(tiny("llama"), &Method::Full, AdamW::default(), 0).unwrap();
    let denom: usize = halves.iter().map(LmBatch::n_scored).sum();
    assert_eq!(denom as f64, n);
    let l2: f64 = halves
        .iter()
        .map(|h| two.accumulate(h, denom as f64).unwrap())
        .sum();
    let g2 = two.grad_norm();
    two.step(1e-3, 1.0);
    assert!((l1 - l2).abs() < 1e-4 * l1, "loss {l1} vs {l2}");
    assert!((g1 - g2).abs() < 1e-5 * g1, "grad norm {g1} vs {g2}");
    for ((name, a), (_, b)) in weights(&one.model).iter().zip(&weights(&two.model)) {
        let diff = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        // One AdamW step of lr 1e-3 normalises each gradient element, so the rounding of a sum
        // taken in another order (two halves vs one batch) can show as ~1e-6 in an element whose
        // gradient is near zero; the GEMM kernel a CPU dispatches to decides which. 1e-5 is 1% of lr.
        assert!(diff < 1e-5, "{name} differs by {diff}");
    }
}

#[test]
fn neat_packing_keeps_samples_apart() {
    // Two samples packed into one row give the same summed loss as the two rows apart.
    let a = (
        vec![1i64, 23, 54, 87, 120],
        vec![-100i64, -100, 54, 87, 120],
    );
    let b = (vec![1i64, 77, 15, 230], vec![-100i64, 77, 15, 230]);
    let apart = LmBatch::new(
        &batch(&[a.0.clone(), b.0.clone()], &[a.1.clone(), b.1.clone()]),
        false,
    );
    let mut packed = batch(
        &[[a.0.clone(), b.0.clone()].concat()],
        &[[a.1.clone(), b.1.clone()].concat()],
    );
    let n = a.0.len();
    for t in n..packed.shape[1] {
        packed.position_ids[t] = (t - n) as u32;
        packed.segment_ids[t] = 2;
    }
    // The first token of the second sample is not predicted from the first sample.
    packed.labels[n] = IGNORE;
    let packed = LmBatch::new(&packed, true);
    assert_eq!(packed.n_scored(), apart.n_scored());
    let t = Trainer::new(tiny("llama"), &Method::Full, AdamW::default(), 0).unwrap();
    let (x, _) = t.eval_loss(&apart);
    let (y, _) = t.eval_loss(&packed);
    assert!((x - y).abs() < 1e-4, "{x} vs {y}");
}

#[test]
fn restored_state_continues_bit_identically() {
    let (_, b) = golden();
    let lora = Method::Lora(LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        rslora: true,
        targets: vec!["q_proj".into(), "down_proj".into()],
    });
    let mut a = Trainer::new(tiny("llama"), &lora, AdamW::default(), 3).unwrap();
    train_steps(&mut a, &b, 2, 1e-2);
    let (state, steps) = a.export_state();
    let mut r = Trainer::new(tiny("llama"), &lora, AdamW::default(), 99).unwrap();
    r.import_state(&steps, &mut |name, _| {
        Ok(state
            .iter()
            .find(|t| t.name == name)
            .unwrap()
            .values
            .clone())
    })
    .unwrap();
    let la = train_steps(&mut a, &b, 2, 1e-2);
    let lr = train_steps(&mut r, &b, 2, 1e-2);
    assert_eq!(la, lr);
    let bits = |t: &mut Trainer<AD>| {
        t.export_state()
            .0
            .into_iter()
            .map(|h| h.values.iter().map(|x| x.to_bits()).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(bits(&mut a), bits(&mut r));
}

#[test]
fn lora_artifacts_load_back_with_their_base() {
    let (_, b) = golden();
    let cfg = lora_all_linear();
    let mut t = Trainer::new(
        tiny("llama"),
        &Method::Lora(cfg.clone()),
        AdamW::default(),
        5,
    )
    .unwrap();
    train_steps(&mut t, &b, 2, 1e-2);
    let out = tempfile::tempdir().unwrap();
    let source = ModelArtifact::open(&fixtures().join("tiny/llama")).unwrap();
    write_lora(
        &t.model,
        &cfg,
        BaseOut::<AD>::Link(&source),
        None,
        out.path(),
    )
    .unwrap();
    let adapter: Json = serde_json::from_str(
        &std::fs::read_to_string(out.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["r"], 4);
    assert_eq!(adapter["target_modules"].as_array().unwrap().len(), 7);
    assert!(out.path().join("base/model.safetensors").is_file());
    let loaded = ModelArtifact::open(out.path())
        .unwrap()
        .load::<Cpu>(&CpuDevice, Dtype::F32)
        .unwrap();
    let ids = vec![vec![1u32, 23, 54, 87, 120]];
    let logits = |m: &Llama<Cpu>| {
        m.forward(ForwardInput::from_rows(&ids, &CpuDevice), None)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    use burn::module::AutodiffModule;
    let trained = t.model.valid();
    assert_eq!(logits(&loaded), logits(&trained));
    // Merged, it is the same function up to rounding.
    let merged = logits(&loaded.merge_lora());
    let diff = merged
        .iter()
        .zip(logits(&trained))
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "{diff}");
}

/// QLoRA on the tiny model: NF4 projections (double-quantised scales) stay frozen and quantised,
/// the adapters learn, and the artifact records the quantisation so that loading it computes what
/// training did (the base quantised the same way), and exporting merges into those values.
#[test]
fn qlora_trains_adapters_on_a_quantised_base_and_its_artifact_computes_the_same() {
    use lf_model::quant::{FourBit, QuantSpec};
    let (_, b) = golden();
    let cfg = lora_all_linear();
    let spec = QuantSpec::FourBit {
        kind: FourBit::Nf4,
        double: true,
    };
    let weights = tiny("llama").linear_bytes().0 / 4;
    let model = tiny("llama").quantize_linears(spec);
    let (dense, quantized) = model.linear_bytes();
    assert_eq!(dense, 0);
    // 4 bits per weight plus one 8-bit scale per 64 weights, an f32 per 256 scales and the offset.
    let blocks = weights / 64;
    let layers = 2 * 7;
    assert!(
        quantized <= weights / 2 + blocks + layers * 12,
        "{quantized} bytes for {weights} weights"
    );
    let mut t = Trainer::new(model, &Method::Lora(cfg.clone()), AdamW::default(), 5).unwrap();
    assert!(t.trained_names().iter().all(|n| n.contains(".lora_")));
    let losses = train_steps(&mut t, &b, 3, 1e-2);
    let after = mean_loss(&mut t, &b);
    assert!(after < losses[0] - 0.01, "{losses:?} → {after}");
    // The base did not move: still the same quantised matrices.
    assert_eq!(t.model.linear_bytes(), (0, quantized));

    let out = tempfile::tempdir().unwrap();
    let source = ModelArtifact::open(&fixtures().join("tiny/llama")).unwrap();
    write_lora(
        &t.model,
        &cfg,
        BaseOut::<AD>::Link(&source),
        Some(spec),
        out.path(),
    )
    .unwrap();
    let artifact = ModelArtifact::open(out.path()).unwrap();
    assert_eq!(artifact.quantization, Some(spec));
    let loaded = artifact.load::<Cpu>(&CpuDevice, Dtype::F32).unwrap();
    // Loaded for inference, the base is dense (dequantised once).
    assert_eq!(loaded.linear_bytes().1, 0);
    let ids = vec![vec![1u32, 23, 54, 87, 120]];
    let logits = |m: &Llama<Cpu>| {
        m.forward(ForwardInput::from_rows(&ids, &CpuDevice), None)
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    use burn::module::AutodiffModule;
    let trained = logits(&t.model.valid());
    assert_eq!(logits(&loaded), trained);
    // The unquantised base with the same adapter is another function.
    let plain = ModelArtifact {
        quantization: None,
        ..artifact.clone()
    };
    assert_ne!(
        logits(&plain.load::<Cpu>(&CpuDevice, Dtype::F32).unwrap()),
        trained
    );
    // Export's streamed merge uses the dequantised base.
    let merged = loaded.merge_lora();
    let mut checked = 0;
    artifact
        .tensors(|name, _, values| {
            if name == "model.layers.1.mlp.up_proj.weight" {
                let want = merged.layers[1].mlp.up_proj.base.dense().unwrap();
                let want = want.into_data().to_vec::<f32>().unwrap();
                let diff = values
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(diff < 1e-6, "{diff}");
                checked += 1;
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(checked, 1);
}

/// A checkpoint bitsandbytes saved in NF4 trains LoRA adapters on its own blocks.
#[test]
fn lora_trains_on_a_bitsandbytes_checkpoint_kept_in_its_blocks() {
    use lf_model::llama::BuildOptions;
    let (_, b) = golden();
    let model = lf_model::load::load_model_with::<AD>(
        &fixtures().join("tiny/llama-bnb-nf4"),
        &CpuDevice,
        Dtype::F32,
        BuildOptions::KEEP_QUANTIZED,
    )
    .unwrap()
    .model;
    let quantized = model.linear_bytes().1;
    assert!(quantized > 0 && model.linear_bytes().0 == 0);
    let lora = Method::Lora(lora_all_linear());
    let mut t = Trainer::new(model, &lora, AdamW::default(), 1).unwrap();
    let losses = train_steps(&mut t, &b, 3, 1e-2);
    let after = mean_loss(&mut t, &b);
    assert!(after < losses[0] - 0.01, "{losses:?} → {after}");
    assert_eq!(t.model.linear_bytes(), (0, quantized));
}

/// `quantization_bit` on a checkpoint bitsandbytes quantised already is refused before training.
#[test]
fn quantization_bit_on_a_bitsandbytes_checkpoint_is_refused() {
    use lf_schemas::kinds::TrainParams;
    use lf_schemas::kinds::dataset::Stage;
    use lf_schemas::kinds::train::FinetuningType;
    let p: TrainParams = serde_json::from_value(serde_json::json!({
        "model": "bnb", "dataset": "data", "quantization_bit": 4
    }))
    .unwrap();
    let inputs = std::collections::BTreeMap::from([
        ("model".to_string(), fixtures().join("tiny/llama-bnb-nf4")),
        ("dataset".to_string(), PathBuf::from("/nonexistent")),
    ]);
    let problems = super::check::check_inputs(&p, "sft", Stage::Sft, FinetuningType::Lora, &inputs);
    let found = problems
        .iter()
        .find(|p| p.field.to_string() == "quantization_bit");
    let found = found.unwrap_or_else(|| panic!("{problems:?}"));
    assert!(
        found.message.contains("bitsandbytes checkpoint"),
        "{}",
        found.message
    );
    assert!(
        found
            .hint
            .as_deref()
            .unwrap()
            .contains("remove `quantization_bit: 4`")
    );
}
