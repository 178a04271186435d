//! Round-trip tests of `export`: the exported Hugging Face folder, the merged LoRA weights, the shards
//! and the GGUF files are loaded back and compared with the model they came from. The fixtures (a
//! tokenizer trained on `builtin:corpus`, tiny random models, a random adapter) are built in temporary
//! folders; the quantisation goldens come from gguf-py (`scripts/goldens/export_gguf.py`).

use std::path::{Path, PathBuf};

use burn::tensor::DType;
use half::f16;
use lf_engine::progress::Progress;
use lf_schemas::kinds::ExportParams;
use serde_json::{Value as Json, json};

use super::{export, hf};
use lf_model::ModelArtifact;
use lf_model::adapter::{Adapter, LoraPair};
use lf_model::config::{Arch, ModelConfig};
use lf_model::gguf::GgufFile;
use lf_model::gguf::GgufSource;
use lf_model::llama::hf_tensor_shapes;
use lf_model::llama::{ForwardInput, TensorSource};
use lf_model::load::read_f32_tensors;
use lf_model::rng::Rng;
use lf_model::{Cpu, CpuDevice, Dtype, Llama, SaveDtype, load_model, save_hf};

/// A trained byte-level BPE tokenizer (chatml template) in `dir/tokenizer`.
pub(crate) fn tokenizer(dir: &Path) -> PathBuf {
    let out = dir.join("tokenizer");
    std::fs::create_dir_all(&out).unwrap();
    let p: lf_schemas::kinds::TokenizerParams = serde_json::from_value(json!({
        "source": "builtin:corpus", "vocab_size": 320, "template": "chatml"
    }))
    .unwrap();
    let texts = crate::data::bpe::training_texts("builtin:corpus", None, None).unwrap();
    crate::data::bpe::train(&p, &texts, &out).unwrap();
    out
}

/// A tiny random model of `arch` with the tokenizer of `tok` in `dir/name`.
pub(crate) fn tiny_model(dir: &Path, name: &str, arch: Arch, tok: &Path, seed: u64) -> PathBuf {
    tiny_model_with(dir, name, ModelConfig::tiny(arch), tok, seed)
}

/// A random model of `config` with the tokenizer of `tok` in `dir/name`.
fn tiny_model_with(
    dir: &Path,
    name: &str,
    mut config: ModelConfig,
    tok: &Path,
    seed: u64,
) -> PathBuf {
    let out = dir.join(name);
    let tk = crate::data::ModelTokenizer::load(tok).unwrap();
    config.vocab_size = tk.vocab_size();
    config.bos_token_id = tk.bos_id;
    config.eos_token_ids = tk.eos_id.into_iter().collect();
    config.pad_token_id = Some(tk.pad_id);
    let model = Llama::<Cpu>::init(&config, seed, &CpuDevice, Dtype::F32).unwrap();
    save_hf(&model, &out, SaveDtype::F32).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(tok.join(f), out.join(f)).unwrap();
    }
    out
}

/// A LoRA artifact in `dir/name`: `base` copied into `base/`, random adapters (rank 4, alpha 8) on
/// q, v and down projections.
pub(crate) fn tiny_lora(dir: &Path, name: &str, base: &Path) -> PathBuf {
    let out = dir.join(name);
    let base_out = out.join("base");
    std::fs::create_dir_all(&base_out).unwrap();
    for e in std::fs::read_dir(base).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), base_out.join(e.file_name())).unwrap();
    }
    let config = ModelConfig::from_hf_file(&base.join("config.json")).unwrap();
    let shapes: std::collections::BTreeMap<String, Vec<usize>> =
        hf_tensor_shapes(&config).into_iter().collect();
    let r = 4;
    let mut modules = std::collections::BTreeMap::new();
    for i in 0..config.num_hidden_layers {
        for m in ["self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"] {
            let module = format!("model.layers.{i}.{m}");
            let s = &shapes[&format!("{module}.weight")];
            let (out_f, in_f) = (s[0], s[1]);
            modules.insert(
                module.clone(),
                LoraPair {
                    a: Rng::for_stream(3, &format!("{module}.A")).normal_vec(r * in_f, 0.0, 0.2),
                    a_shape: [r, in_f],
                    b: Rng::for_stream(3, &format!("{module}.B")).normal_vec(out_f * r, 0.0, 0.2),
                    b_shape: [out_f, r],
                },
            );
        }
    }
    let adapter = Adapter {
        config: json!({
            "peft_type": "LORA", "r": r, "lora_alpha": 8, "lora_dropout": 0.0,
            "target_modules": ["q_proj", "v_proj", "down_proj"], "task_type": "CAUSAL_LM",
        }),
        alpha: 8.0,
        rslora: false,
        modules,
    };
    adapter.normalized().write(&out).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
    ] {
        std::fs::copy(base.join(f), out.join(f)).unwrap();
    }
    out
}

fn params(v: Json) -> ExportParams {
    serde_json::from_value(v).unwrap()
}

fn run_export(p: &ExportParams, model: &Path, out: &Path) -> super::ExportInfo {
    export(p, model, out, &Progress::new(false)).unwrap_or_else(|e| panic!("export: {e:#}"))
}

const IDS: [u32; 9] = [5, 17, 3, 250, 42, 7, 99, 1, 64];

fn logits(model: &Llama<Cpu>) -> Vec<f32> {
    let input = ForwardInput::from_rows(&[IDS.to_vec()], &CpuDevice);
    model
        .forward(input, None)
        .cast(DType::F32)
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

fn load(path: &Path) -> Llama<Cpu> {
    load_model::<Cpu>(path, &CpuDevice, Dtype::F32)
        .unwrap_or_else(|e| panic!("load {}: {e:#}", path.display()))
        .model
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every tensor of `model` with the adapter merged, by HF name.
fn merged(model: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let art = ModelArtifact::open(model).unwrap();
    let mut out = Vec::new();
    art.tensors(|n, s, v| {
        out.push((n.to_string(), s.to_vec(), v));
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn tensor_listing_matches_the_models_own() {
    for arch in [Arch::Llama, Arch::Mistral, Arch::Qwen2, Arch::Qwen3] {
        let mut c = ModelConfig::tiny(arch);
        c.tie_word_embeddings = arch == Arch::Qwen3;
        let model = Llama::<Cpu>::init(&c, 1, &CpuDevice, Dtype::F32).unwrap();
        let theirs: Vec<(String, Vec<usize>)> = model
            .hf_tensors()
            .into_iter()
            .map(|(n, t)| (n, t.to_f32().1))
            .collect();
        assert_eq!(hf_tensor_shapes(&c), theirs, "{arch:?}");
    }
}

#[test]
fn f32_export_reloads_with_identical_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Llama, &tok, 1);
    let out = tmp.path().join("out");
    let info = run_export(&params(json!({"model": "m", "dtype": "f32"})), &src, &out);
    assert_eq!(info.weights.files, vec!["model.safetensors"]);
    assert!(!info.merged_adapter);
    let d = max_diff(&logits(&load(&src)), &logits(&load(&out)));
    assert!(d < 1e-5, "max abs logit diff {d}");
    assert_eq!(
        read_json(&out.join("config.json"))["torch_dtype"],
        "float32"
    );
    for f in [
        "generation_config.json",
        "tokenizer.json",
        "special_tokens_map.json",
        "export.json",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let cfg = read_json(&out.join("tokenizer_config.json"));
    assert!(
        cfg["chat_template"]
            .as_str()
            .unwrap()
            .contains("<|im_start|>")
    );
    // `auto` keeps the stored dtype (f32 here).
    let out2 = tmp.path().join("out2");
    let info = run_export(&params(json!({"model": "m"})), &src, &out2);
    assert_eq!(info.dtype, SaveDtype::F32);
}

#[test]
fn merged_lora_gives_the_logits_of_base_plus_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let base = tiny_model(tmp.path(), "base", Arch::Llama, &tok, 2);
    let lora = tiny_lora(tmp.path(), "lora", &base);
    let art = ModelArtifact::open(&lora).unwrap();
    let with_adapter = art.load::<Cpu>(&CpuDevice, Dtype::F32).unwrap();
    assert!(with_adapter.layers[0].self_attn.q_proj.lora.is_some());
    let unmerged = logits(&with_adapter);
    let base_logits = logits(&load(&base));
    assert!(
        max_diff(&unmerged, &base_logits) > 1e-3,
        "the adapter should change the logits"
    );
    let out = tmp.path().join("out");
    let info = run_export(
        &params(json!({"model": "lora", "dtype": "f32", "adapter": true})),
        &lora,
        &out,
    );
    assert!(info.merged_adapter);
    let merged_logits = logits(&load(&out));
    let d = max_diff(&unmerged, &merged_logits);
    assert!(d < 1e-5, "merged vs base+adapter: max abs diff {d}");
    // The model module's own merge agrees too.
    let burn_merged = logits(&with_adapter.merge_lora());
    assert!(max_diff(&burn_merged, &merged_logits) < 1e-5);

    // The adapter alone, in PEFT's layout, reads back to the same matrices.
    let cfg = read_json(&out.join("adapter/adapter_config.json"));
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["lora_alpha"], 8);
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(
        cfg["target_modules"],
        json!(["down_proj", "q_proj", "v_proj"])
    );
    let keys: Vec<String> = read_f32_tensors(&out.join("adapter/adapter_model.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(k, _, _)| k)
        .collect();
    assert!(
        keys.contains(&"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight".into())
    );
    assert!(keys.contains(&"base_model.model.model.layers.1.mlp.down_proj.lora_B.weight".into()));
    assert_eq!(keys.len(), 2 * 3 * 2);
    let back = Adapter::read(&out.join("adapter")).unwrap();
    assert_eq!(back.modules, art.adapter.as_ref().unwrap().modules);
    assert_eq!(back.scale(4), 2.0);
}

#[test]
fn sharded_export_writes_an_index_that_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Qwen2, &tok, 3);
    let out = tmp.path().join("out");
    let info = run_export(
        &params(json!({"model": "m", "dtype": "f32", "max_shard_size": "60KB"})),
        &src,
        &out,
    );
    let n = info.weights.files.len();
    assert!(n >= 3, "{n} shards");
    assert_eq!(
        info.weights.files[0],
        format!("model-00001-of-{n:05}.safetensors")
    );
    let index = read_json(&out.join("model.safetensors.index.json"));
    let map = index["weight_map"].as_object().unwrap();
    let config = ModelConfig::from_hf_file(&out.join("config.json")).unwrap();
    let shapes = hf_tensor_shapes(&config);
    assert_eq!(map.len(), shapes.len());
    let mut total = 0u64;
    for f in &info.weights.files {
        let bytes = std::fs::read(out.join(f)).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        for name in st.names() {
            assert_eq!(map[name], f.as_str());
            total += st.tensor(name).unwrap().data().len() as u64;
        }
        // No shard but a lone oversized tensor exceeds the limit.
        assert!(bytes.len() < 60_000 + 2_000 || st.names().len() == 1, "{f}");
    }
    assert_eq!(index["metadata"]["total_size"], total);
    assert!(!out.join("model.safetensors").exists());
    let d = max_diff(&logits(&load(&src)), &logits(&load(&out)));
    assert!(d < 1e-5, "sharded reload: max abs diff {d}");
}

#[test]
fn half_precision_exports_round_each_weight() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Qwen3, &tok, 4);
    let orig: std::collections::HashMap<String, Vec<f32>> =
        merged(&src).into_iter().map(|(n, _, v)| (n, v)).collect();
    for (dtype, round, torch) in [
        (
            "f16",
            (|x: f32| f16::from_f32(x).to_f32()) as fn(f32) -> f32,
            "float16",
        ),
        (
            "bf16",
            |x: f32| half::bf16::from_f32(x).to_f32(),
            "bfloat16",
        ),
    ] {
        let out = tmp.path().join(dtype);
        run_export(&params(json!({"model": "m", "dtype": dtype})), &src, &out);
        assert_eq!(read_json(&out.join("config.json"))["torch_dtype"], torch);
        for (name, _, values) in read_f32_tensors(&out.join("model.safetensors")).unwrap() {
            let want: Vec<f32> = orig[&name].iter().map(|&x| round(x)).collect();
            assert_eq!(values, want, "{dtype} {name}");
        }
        // `auto` on a half-precision model keeps it.
        let again = tmp.path().join(format!("{dtype}-auto"));
        let info = run_export(&params(json!({"model": "m"})), &out, &again);
        assert_eq!(hf::torch_name(info.dtype), torch);
    }
}

/// The largest error a block of 32 weights `w` may get in GGUF type `ty`: half a step for Q8_0 and
/// the affine types (Q4_1, Q5_1; plus the f16 rounding of the stored minimum), a whole step for the
/// symmetric 4/5-bit types (their largest code on the other side of zero is one step short).
fn block_tolerance(ty: &str, w: &[f32]) -> f32 {
    let amax = w.iter().fold(0f32, |m, x| m.max(x.abs()));
    let (max, min) = w
        .iter()
        .fold((f32::MIN, f32::MAX), |(a, b), &x| (a.max(x), b.min(x)));
    let step = |range: f32| f16::from_f32(range).to_f32();
    let slack = amax * 2e-3 + 1e-7;
    match ty {
        "q8_0" => step(amax / 127.0) * 0.5 + slack,
        "q4_0" => step(amax / 8.0) + slack,
        "q5_0" => step(amax / 16.0) + slack,
        "q4_1" => step((max - min) / 15.0) * 0.5 + slack,
        "q5_1" => step((max - min) / 31.0) * 0.5 + slack,
        other => panic!("no tolerance for {other}"),
    }
}

/// Checks a GGUF export of `model` against its merged tensors: F32 exactly, F16 to f16 rounding, the
/// block types within [`block_tolerance`] per block.
fn check_gguf(model: &Path, out: &Path, arch: &str) {
    let want = merged(model);
    let config = ModelArtifact::open(model).unwrap().config;
    for ty in ["f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"] {
        let path = out.join(format!("model-{ty}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.version, 3);
        assert_eq!(file.alignment, 32);
        assert_eq!(file.meta_str("general.architecture"), Some(arch));
        assert_eq!(file.meta_str("tokenizer.ggml.model"), Some("gpt2"));
        assert_eq!(file.meta_str("tokenizer.ggml.pre"), Some("gpt-2"));
        assert_eq!(
            file.meta_array_len("tokenizer.ggml.tokens"),
            Some(config.vocab_size)
        );
        assert!(file.meta_array_len("tokenizer.ggml.merges").unwrap() > 0);
        assert!(
            file.meta_str("tokenizer.chat_template")
                .unwrap()
                .contains("<|im_start|>")
        );
        assert_eq!(
            file.meta_u64("tokenizer.ggml.eos_token_id")
                .map(|v| v as u32),
            config.eos_token_ids.first().copied()
        );
        let read_config = ModelConfig::from_gguf(&file).unwrap();
        assert_eq!(read_config.num_hidden_layers, config.num_hidden_layers);
        assert_eq!(read_config.tie_word_embeddings, config.tie_word_embeddings);
        let mut src = GgufSource::new(&file, &read_config);
        for (name, shape, values) in &want {
            let got = src.tensor(name, shape).unwrap();
            let is_matrix = shape.len() == 2;
            match ty {
                "f32" => assert_eq!(&got, values, "{ty} {name}"),
                "f16" if is_matrix => {
                    let r: Vec<f32> = values.iter().map(|&x| f16::from_f32(x).to_f32()).collect();
                    assert_eq!(got, r, "{ty} {name}");
                }
                "q8_0" | "q4_0" | "q4_1" | "q5_0" | "q5_1" if is_matrix => {
                    let cols = shape[1];
                    for (row_got, row_want) in got.chunks(cols).zip(values.chunks(cols)) {
                        for (bg, bw) in row_got.chunks(32).zip(row_want.chunks(32)) {
                            let tol = block_tolerance(ty, bw);
                            for (g, w) in bg.iter().zip(bw) {
                                assert!(
                                    (g - w).abs() <= tol,
                                    "{ty} {name}: {g} vs {w} (tolerance {tol})"
                                );
                            }
                        }
                    }
                }
                _ => assert_eq!(&got, values, "{ty} {name} (vectors stay f32)"),
            }
        }
    }
}

#[test]
fn gguf_files_read_back_with_the_same_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    for (arch, gguf_arch, seed) in [
        (Arch::Llama, "llama", 5),
        (Arch::Qwen2, "qwen2", 6),
        (Arch::Qwen3, "qwen3", 7),
    ] {
        let name = gguf_arch.to_string();
        let base = tiny_model(tmp.path(), &name, arch, &tok, seed);
        let lora = tiny_lora(tmp.path(), &format!("{name}-lora"), &base);
        let out = tmp.path().join(format!("{name}-out"));
        let info = run_export(
            &params(json!({
                "model": "x", "dtype": "f32",
                "gguf": ["f32", "f16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1"]
            })),
            &lora,
            &out,
        );
        assert_eq!(info.gguf.len(), 7);
        check_gguf(&lora, &out, gguf_arch);
        // The F32 file runs like the merged model (our reader undoes the Q/K permutation).
        let d = max_diff(
            &logits(&load(&out.join("model-f32.gguf"))),
            &logits(&load(&out)),
        );
        assert!(d < 1e-5, "{name}: gguf f32 vs merged: {d}");
        let d16 = max_diff(
            &logits(&load(&out.join("model-f16.gguf"))),
            &logits(&load(&out)),
        );
        assert!(d16 < 1e-2, "{name}: gguf f16 vs merged: {d16}");
    }
    // The tokenizer rebuilt from the metadata encodes as the original.
    let file = GgufFile::open(&tmp.path().join("llama-out/model-q8_0.gguf")).unwrap();
    let rebuilt = lf_model::tokenizer_from_gguf(&file).unwrap();
    let original = lf_model::TokenizerBundle::from_hf_dir(&tok).unwrap();
    for text in [
        "Hello, world! The cat sat on the mat.",
        "<|im_start|>user\nHi there<|im_end|>\n",
        "  spaces   and\ttabs\n\nnewlines 12345",
        "한국어와 中文 text",
    ] {
        assert_eq!(
            rebuilt.encode(text, false).unwrap(),
            original.encode(text, false).unwrap(),
            "{text:?}"
        );
    }
    assert_eq!(rebuilt.eos_ids, original.eos_ids);
}

/// The k-quant files: llama.cpp's per-tensor types (pure files and the `_M` mixes, on a model whose
/// rows are multiples of 256), every tensor equal to the k-quant encoding of the exported weights
/// (Q/K rows permuted), a bounded error, and logits close to the unquantised model's.
#[test]
fn k_quant_files_follow_llama_cpps_mix() {
    use lf_model::gguf::{GgmlType, dequantize, encode};
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let mut config = ModelConfig::tiny(Arch::Llama);
    config.hidden_size = 256;
    config.intermediate_size = 512;
    config.num_hidden_layers = 4;
    config.head_dim = 64;
    let model = tiny_model_with(tmp.path(), "k", config.clone(), &tok, 11);
    let out = tmp.path().join("k-out");
    let types = ["f32", "q4_k", "q5_k", "q6_k", "q4_k_m", "q5_k_m"];
    run_export(
        &params(json!({"model": "x", "dtype": "f32", "gguf": types})),
        &model,
        &out,
    );
    let reference = logits(&load(&out));
    let f32_file = GgufFile::open(&out.join("model-f32.gguf")).unwrap();
    for (ty, file_type, rms_bound) in [
        ("q4_k", 14, 0.12),
        ("q5_k", 16, 0.06),
        ("q6_k", 18, 0.03),
        ("q4_k_m", 15, 0.12),
        ("q5_k_m", 17, 0.06),
    ] {
        let path = out.join(format!("model-{ty}.gguf"));
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.meta_u64("general.file_type"), Some(file_type), "{ty}");
        let (mut err2, mut sum2) = (0f64, 0f64);
        for info in file.tensors() {
            let name = info.name.as_str();
            let layer: Option<usize> = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|i| i.parse().ok());
            let more_bits = matches!(layer, Some(2 | 3))
                && (name.contains(".attn_v.") || name.contains(".ffn_down."));
            let want_type = if info.dims.len() < 2 {
                GgmlType::F32
            } else {
                match ty {
                    "q4_k" => GgmlType::Q4_K,
                    "q5_k" => GgmlType::Q5_K,
                    "q6_k" => GgmlType::Q6_K,
                    _ if name == "output.weight" || more_bits => GgmlType::Q6_K,
                    "q4_k_m" => GgmlType::Q4_K,
                    _ => GgmlType::Q5_K,
                }
            };
            assert_eq!(info.ggml_type, want_type, "{ty} {name}");
            if info.dims.len() < 2 {
                continue;
            }
            // The stored blocks are the encoding of the f32 file's tensor (same names, same
            // permutation).
            let (values, _) = f32_file.dequantize(name).unwrap();
            let bytes = file.tensor_bytes(info);
            assert_eq!(
                bytes,
                encode(&values, info.ggml_type).unwrap(),
                "{ty} {name}"
            );
            let back = dequantize(info.ggml_type, bytes, values.len()).unwrap();
            for (b, v) in back.iter().zip(&values) {
                err2 += f64::from(b - v).powi(2);
                sum2 += f64::from(*v).powi(2);
            }
        }
        let rel = (err2 / sum2).sqrt();
        assert!(rel < rms_bound, "{ty}: relative RMS error {rel}");
        let d = max_diff(&logits(&load(&path)), &reference);
        assert!(d < 0.5, "{ty}: logits differ by {d}");
        eprintln!("{ty}: relative RMS error {rel:.4}, max logit difference {d:.4}");
    }
}

#[test]
fn gguf_input_exports_back_to_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Llama, &tok, 8);
    let first = tmp.path().join("first");
    run_export(
        &params(json!({"model": "m", "dtype": "f32", "gguf": ["f32"]})),
        &src,
        &first,
    );
    // A folder holding only the GGUF file.
    let gguf_dir = tmp.path().join("gguf");
    std::fs::create_dir_all(&gguf_dir).unwrap();
    std::fs::copy(first.join("model-f32.gguf"), gguf_dir.join("m.gguf")).unwrap();
    let second = tmp.path().join("second");
    let info = run_export(
        &params(json!({"model": "g", "gguf": ["f32"]})),
        &gguf_dir,
        &second,
    );
    assert_eq!(info.dtype, SaveDtype::F32);
    assert!(second.join("tokenizer.json").is_file());
    let a = merged(&src);
    let b = merged(&second);
    assert_eq!(a, b);
    // The tokenizer metadata is carried over unchanged.
    let f1 = GgufFile::open(&first.join("model-f32.gguf")).unwrap();
    let f2 = GgufFile::open(&second.join("model-f32.gguf")).unwrap();
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.merges",
        "tokenizer.chat_template",
    ] {
        assert_eq!(f1.meta(key), f2.meta(key), "{key}");
    }
}

#[test]
fn modelfile_has_a_go_template_and_stop_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Llama, &tok, 9);
    let out = tmp.path().join("out");
    let info = run_export(
        &params(json!({"model": "m", "gguf": ["q8_0", "f16"], "ollama": true})),
        &src,
        &out,
    );
    let o = info.ollama.unwrap();
    assert!(o.template);
    assert_eq!(o.from, "model-q8_0.gguf");
    let mf = std::fs::read_to_string(out.join("Modelfile")).unwrap();
    assert!(mf.contains("FROM ./model-q8_0.gguf\n"), "{mf}");
    assert!(mf.contains("TEMPLATE \"\"\""), "{mf}");
    assert!(mf.contains("{{ .Content }}{{ \"<|im_end|>\\n\" }}"), "{mf}");
    assert!(mf.contains("PARAMETER stop \"<|im_end|>\"\n"), "{mf}");
}

#[test]
fn builtin_template_overrides_the_models() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let src = tiny_model(tmp.path(), "m", Arch::Llama, &tok, 10);
    let out = tmp.path().join("out");
    run_export(
        &params(json!({"model": "m", "template": "default", "gguf": ["f16"]})),
        &src,
        &out,
    );
    let want = crate::data::chat::builtin(lf_schemas::kinds::dataset::TemplateName::Default)
        .unwrap()
        .source;
    let cfg = read_json(&out.join("tokenizer_config.json"));
    assert_eq!(cfg["chat_template"], want);
    let file = GgufFile::open(&out.join("model-f16.gguf")).unwrap();
    assert_eq!(file.meta_str("tokenizer.chat_template"), Some(want));
}

#[test]
fn export_is_byte_identical_when_repeated() {
    let tmp = tempfile::tempdir().unwrap();
    let tok = tokenizer(tmp.path());
    let base = tiny_model(tmp.path(), "base", Arch::Llama, &tok, 11);
    let lora = tiny_lora(tmp.path(), "lora", &base);
    let p = params(json!({
        "model": "lora", "dtype": "bf16", "max_shard_size": "100KB", "adapter": true,
        "gguf": ["q8_0"], "ollama": true
    }));
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_export(&p, &lora, &a);
    run_export(&p, &lora, &b);
    let mut files: Vec<PathBuf> = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    walk(&a, &mut files);
    assert!(files.len() > 8);
    for f in files {
        let rel = f.strip_prefix(&a).unwrap();
        assert_eq!(
            std::fs::read(&f).unwrap(),
            std::fs::read(b.join(rel)).unwrap(),
            "{}",
            rel.display()
        );
    }
}

#[test]
fn quantisation_matches_gguf_py() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/export/quant_golden.json");
    let golden = read_json(&path);
    for case in golden["cases"].as_array().unwrap() {
        let values: Vec<f32> = case["input_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
            .collect();
        for (ty, ggml) in [
            ("q8_0", lf_model::gguf::GgmlType::Q8_0),
            ("q4_0", lf_model::gguf::GgmlType::Q4_0),
            ("q4_1", lf_model::gguf::GgmlType::Q4_1),
            ("q5_0", lf_model::gguf::GgmlType::Q5_0),
            ("q5_1", lf_model::gguf::GgmlType::Q5_1),
            ("f16", lf_model::gguf::GgmlType::F16),
            ("bf16", lf_model::gguf::GgmlType::BF16),
        ] {
            let want = case[ty].as_str().unwrap();
            let bytes = lf_model::gguf::encode(&values, ggml).unwrap();
            let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, want, "{} {ty}", case["name"]);
            // The 5-bit blocks read back as gguf-py dequantises them.
            if let Some(bits) = case.get(format!("{ty}_dequantized_bits")) {
                let want: Vec<u32> = bits
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_u64().unwrap() as u32)
                    .collect();
                let got = lf_model::gguf::dequantize(ggml, &bytes, values.len()).unwrap();
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{} {ty} dequantised", case["name"]);
            }
        }
    }
}

/// The k-quants against ggml's own quantiser (`ggml_quantize_chunk`, the golden's bytes) and
/// gguf-py's dequantisation of them.
#[test]
fn k_quants_match_ggml() {
    use lf_model::gguf::{GgmlType, dequantize, encode};
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/export/quant_golden.json");
    let golden = read_json(&path);
    let bits = |v: &Json| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u32)
            .collect()
    };
    let cases = golden["k_cases"].as_array().unwrap();
    assert!(cases.len() >= 8, "the golden has its k-quant cases");
    for case in cases {
        let values: Vec<f32> = bits(&case["input_bits"])
            .into_iter()
            .map(f32::from_bits)
            .collect();
        for (ty, ggml) in [
            ("q4_k", GgmlType::Q4_K),
            ("q5_k", GgmlType::Q5_K),
            ("q6_k", GgmlType::Q6_K),
        ] {
            let bytes = encode(&values, ggml).unwrap();
            let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, case[ty].as_str().unwrap(), "{} {ty}", case["name"]);
            let read: Vec<u32> = dequantize(ggml, &bytes, values.len())
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect();
            let want = bits(&case[format!("{ty}_dequantized_bits")]);
            assert_eq!(read, want, "{} {ty} dequantised", case["name"]);
        }
    }
    // Whole super-blocks only.
    assert!(encode(&[0.0; 255], GgmlType::Q4_K).is_err());
}

#[test]
fn parameters_are_checked() {
    use lf_engine::Step;
    let problems = crate::kinds::export::Export.check(&params(
        json!({"model": "m", "ollama": true, "max_shard_size": "lots", "gguf": ["f16", "f16"]}),
    ));
    let fields: Vec<String> = problems.iter().map(|p| p.field.to_string()).collect();
    assert_eq!(fields, vec!["max_shard_size", "gguf[1]"]);
    let problems =
        crate::kinds::export::Export.check(&params(json!({"model": "m", "ollama": true})));
    assert_eq!(problems[0].field.to_string(), "ollama");
}
