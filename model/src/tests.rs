//! Parity and behaviour tests of the model module against the fixtures in `tests/fixtures`
//! (goldens written by `scripts/goldens/*.py` from transformers; no Python runs here).

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Int, Tensor, TensorData};
use serde_json::Value;

use super::backend::{Cpu, CpuDevice, Dtype};
use super::config::ModelConfig;
use super::generate::{GenerateOptions, Sampling, generate};
use super::llama::{ForwardInput, Llama, int_tensor};
use super::load::{LoadedModel, load_model};

type B = Cpu;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load_tiny(name: &str, dtype: Dtype) -> LoadedModel<B> {
    load_model::<B>(&fixtures().join("tiny").join(name), &CpuDevice, dtype)
        .unwrap_or_else(|e| panic!("load {name}: {e:#}"))
}

/// All logits of one row, `[seq][vocab]` as f32.
fn logits_of(model: &Llama<B>, ids: &[u32]) -> Vec<Vec<f32>> {
    let input = ForwardInput::from_rows(&[ids.to_vec()], &CpuDevice);
    let logits = model.forward(input, None);
    let [_, t, v] = logits.dims();
    let flat = logits.cast(DType::F32).into_data().to_vec::<f32>().unwrap();
    (0..t).map(|i| flat[i * v..(i + 1) * v].to_vec()).collect()
}

/// A JSON array of numbers as f32 (a row of golden logits).
fn floats_of(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn greedy(model: &Llama<B>, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        max_new_tokens: n,
        sampling: Sampling::greedy(),
        ..Default::default()
    };
    generate(model, &[prompt.to_vec()], &opts, None, &mut |_, _| {})
        .unwrap()
        .tokens
        .remove(0)
}

fn check_tiny_golden(name: &str) {
    let loaded = load_tiny(name, Dtype::F32);
    let golden = read_json(&fixtures().join("tiny").join(name).join("golden.json"));
    let mut worst = 0f32;
    for seq in golden["sequences"].as_array().unwrap() {
        let ids = ids_of(&seq["input_ids"]);
        let got = logits_of(&loaded.model, &ids);
        for (pos, want) in seq["logits"].as_array().unwrap().iter().enumerate() {
            let want = floats_of(want);
            let d = max_abs_diff(&got[pos], &want);
            worst = worst.max(d);
            assert!(
                d < 1e-4,
                "{name}: ids {ids:?} position {pos}: max abs diff {d}"
            );
        }
        let argmax: Vec<u32> = got
            .iter()
            .map(|r| super::generate::argmax(r) as u32)
            .collect();
        assert_eq!(argmax, ids_of(&seq["argmax"]), "{name}: argmax");
    }
    let g = &golden["greedy"];
    let new = greedy(&loaded.model, &ids_of(&g["prompt"]), 16);
    assert_eq!(new, ids_of(&g["new_tokens"]), "{name}: greedy tokens");
    eprintln!("{name}: worst logit diff {worst:e}");
}

#[test]
fn tiny_llama_matches_golden() {
    check_tiny_golden("llama");
}

#[test]
fn tiny_llama_sharded_matches_golden() {
    check_tiny_golden("llama-sharded");
}

#[test]
fn tiny_mistral_matches_golden() {
    check_tiny_golden("mistral");
}

#[test]
fn tiny_qwen2_matches_golden() {
    check_tiny_golden("qwen2");
}

#[test]
fn tiny_qwen2_bf16_matches_golden() {
    check_tiny_golden("qwen2-bf16");
}

#[test]
fn tiny_qwen3_matches_golden() {
    check_tiny_golden("qwen3");
}

// ---------------------------------------------------------------------------------------------
// SmolLM2-135M-Instruct (Q4_1 GGUF) against transformers.

fn smollm2_gguf() -> PathBuf {
    let dir = std::env::var_os("LF_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.models"));
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "`{}` is missing: the SmolLM2 parity tests need it\nhint: run `scripts/fetch-models.sh` from the repository root",
        path.display()
    );
    path
}

fn smollm2_fixture(name: &str) -> PathBuf {
    fixtures().join("smollm2").join(name)
}

/// Reads one f32 tensor of a safetensors file.
fn read_f32_tensor(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    assert_eq!(t.dtype(), safetensors::Dtype::F32);
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn smollm2_gguf_logits_and_greedy_match_transformers() {
    let path = smollm2_gguf();
    let loaded = load_model::<B>(&path, &CpuDevice, Dtype::F32).unwrap();
    let model = &loaded.model;
    assert_eq!(loaded.config.num_hidden_layers, 30);
    assert!(loaded.config.tie_word_embeddings);

    let golden = read_json(&smollm2_fixture("logits.json"));
    for p in golden["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let ids = ids_of(&p["input_ids"]);
        let input = ForwardInput::from_rows(std::slice::from_ref(&ids), &CpuDevice);
        let got = model
            .forward_last(input, None)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let want = read_f32_tensor(&smollm2_fixture("logits.safetensors"), name);
        let d = max_abs_diff(&got, &want);
        eprintln!("smollm2 {name}: last-position max abs diff {d:e}");
        assert!(d < 1e-3, "{name}: last-position logits differ by {d}");
        assert_eq!(
            super::generate::argmax(&got) as u64,
            p["last_argmax"].as_u64().unwrap()
        );
    }

    let greedy_golden = read_json(&smollm2_fixture("greedy.json"));
    let n = greedy_golden["n_new"].as_u64().unwrap() as usize;
    for p in greedy_golden["prompts"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let new = greedy(model, &ids_of(&p["input_ids"]), n);
        assert_eq!(new, ids_of(&p["new_tokens"]), "{name}: greedy continuation");
    }

    // Stop strings: prompt3 continues " Paris.\n\nThe answer is: ..."; "." ends it after " Paris.".
    let tb = super::load::load_tokenizer(&path).unwrap();
    let prompt = tb.encode("The capital of France is", false).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 32,
        stop_strings: vec![".".into()],
        ..Default::default()
    };
    let out = generate(model, &[prompt], &opts, Some(&tb), &mut |_, _| {}).unwrap();
    assert_eq!(out.finish[0], super::generate::FinishReason::StopString);
    assert_eq!(tb.decode(&out.tokens[0], false).unwrap(), " Paris.");
}

#[test]
fn smollm2_gguf_metadata_and_dequant_match_gguf_py() {
    use super::gguf::GgufFile;
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let info = read_json(&smollm2_fixture("gguf_info.json"));
    assert_eq!(
        u64::from(file.version),
        info["header"]["GGUF.version"].as_u64().unwrap()
    );
    assert_eq!(file.alignment, info["alignment"].as_u64().unwrap());
    assert_eq!(file.data_offset, info["data_offset"].as_u64().unwrap());
    assert_eq!(
        file.tensors.len() as u64,
        info["tensor_count"].as_u64().unwrap()
    );
    assert_eq!(
        file.metadata.len() as u64,
        info["header"]["GGUF.kv_count"].as_u64().unwrap()
    );
    let cfg = ModelConfig::from_gguf(&file).unwrap();
    assert_eq!(
        (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads,
            cfg.head_dim,
            cfg.vocab_size
        ),
        (576, 1536, 9, 3, 64, 49152)
    );
    assert_eq!(cfg.rope_theta, 100000.0);
    for t in info["tensors"].as_array().unwrap() {
        let name = t["name"].as_str().unwrap();
        let ti = file.tensor(name).unwrap();
        assert_eq!(
            ti.ggml_type.to_string(),
            t["ggml_type"].as_str().unwrap(),
            "{name}"
        );
        assert_eq!(ti.offset, t["offset_in_data"].as_u64().unwrap(), "{name}");
        assert_eq!(ti.n_bytes, t["n_bytes"].as_u64().unwrap(), "{name}");
    }
    for (name, sample) in info["dequant_samples"].as_object().unwrap() {
        let (values, shape) = file.dequantize(name).unwrap();
        let row_len = sample["row_len"].as_u64().unwrap() as usize;
        assert_eq!(*shape.last().unwrap(), row_len);
        for (key, want) in sample.as_object().unwrap() {
            let Some(rest) = key.strip_prefix("row").filter(|r| r.contains("_first")) else {
                continue;
            };
            let (row, count) = rest.split_once("_first").unwrap();
            let (row, count): (usize, usize) = (row.parse().unwrap(), count.parse().unwrap());
            let want = floats_of(want);
            assert_eq!(want.len(), count);
            assert_eq!(
                &values[row * row_len..row * row_len + count],
                &want[..],
                "{name} {key}"
            );
        }
        let t = info["tensors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name.as_str())
            .unwrap();
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let want = t["dequant_sum_f64"].as_f64().unwrap();
        assert!(
            (sum - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{name}: sum {sum} vs {want}"
        );
    }
}

#[test]
fn smollm2_tokenizer_matches_golden_and_tokenizer_json() {
    use super::gguf::GgufFile;
    use crate::gguf::tokenizer::tokenizer_from_gguf;
    let file = GgufFile::open(&smollm2_gguf()).unwrap();
    let tb = tokenizer_from_gguf(&file).unwrap();
    let reference =
        tokenizers::Tokenizer::from_file(smollm2_fixture("tokenizer/tokenizer.json")).unwrap();
    let golden = read_json(&smollm2_fixture("tokenize_golden.json"));
    assert_eq!(
        tb.bos_id,
        Some(golden["special_ids"]["bos"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tb.eos_ids,
        vec![golden["special_ids"]["eos"].as_u64().unwrap() as u32]
    );
    assert_eq!(
        tb.pad_id,
        Some(golden["special_ids"]["pad"].as_u64().unwrap() as u32)
    );
    assert_eq!(
        tb.eos_token.as_deref(),
        golden["special_tokens"]["eos_token"].as_str()
    );
    assert!(!tb.add_bos);
    let template =
        std::fs::read_to_string(smollm2_fixture("tokenizer/chat_template.jinja")).unwrap();
    assert_eq!(tb.chat_template.as_deref(), Some(template.as_str()));
    assert_eq!(tb.tokenizer.get_vocab(true), reference.get_vocab(true));
    for case in golden["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        assert_eq!(tb.encode(text, false).unwrap(), want, "ids of {text:?}");
        let ref_ids = reference.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(ref_ids, want, "tokenizer.json ids of {text:?}");
        assert_eq!(
            tb.decode(&want, false).unwrap(),
            case["decoded"].as_str().unwrap(),
            "decode {text:?}"
        );
        assert_eq!(
            tb.decode(&want, true).unwrap(),
            case["decoded_skip_special"].as_str().unwrap(),
            "decode skipping specials {text:?}"
        );
    }
}

#[test]
fn smollm2_gguf_truncated_or_corrupted_gives_errors() {
    use super::gguf::GgufFile;
    let full = std::fs::read(smollm2_gguf()).unwrap();
    let info = read_json(&smollm2_fixture("gguf_info.json"));
    let data_offset = info["data_offset"].as_u64().unwrap() as usize;
    // Cuts inside the header and metadata (dense), and inside the tensor data (sparse).
    let mut cuts: Vec<usize> = (0..64).collect();
    cuts.extend((0..200).map(|i| 64 + i * (data_offset - 64) / 200));
    cuts.extend((1..8).map(|i| data_offset + i * (full.len() - data_offset) / 8));
    cuts.push(full.len() - 1);
    for cut in cuts {
        let r = GgufFile::from_bytes(full[..cut].to_vec());
        assert!(r.is_err(), "truncated at {cut} of {} parsed", full.len());
    }
    // Flipped bytes in the header and metadata: an error or a file that still parses, never a panic.
    let header = full[..data_offset + 4096].to_vec();
    let mut rng = super::rng::Rng::new(5);
    for _ in 0..300 {
        let mut b = header.clone();
        let i = (rng.next_u64() % data_offset as u64) as usize;
        b[i] ^= 1 << (rng.next_u64() % 8);
        let _ = GgufFile::from_bytes(b);
    }
}

// ---------------------------------------------------------------------------------------------
// Behaviour of the decoder pieces.

#[test]
fn rope_rotates_half_pairs() {
    use super::rope::apply_rotary;
    let device = CpuDevice;
    // One head of width 4: dimension i pairs with i + 2.
    let x = Tensor::<B, 4>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [1, 1, 1, 4]),
        &device,
    );
    let (a0, a1) = (0.3f32, 1.1f32);
    let cos = Tensor::<B, 4>::from_data(
        TensorData::new(vec![a0.cos(), a1.cos()], [1, 1, 1, 2]),
        &device,
    );
    let sin = Tensor::<B, 4>::from_data(
        TensorData::new(vec![a0.sin(), a1.sin()], [1, 1, 1, 2]),
        &device,
    );
    let got = apply_rotary(x, &cos, &sin)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let want = [
        1.0 * a0.cos() - 3.0 * a0.sin(),
        2.0 * a1.cos() - 4.0 * a1.sin(),
        3.0 * a0.cos() + 1.0 * a0.sin(),
        4.0 * a1.cos() + 2.0 * a1.sin(),
    ];
    assert!(max_abs_diff(&got, &want) < 1e-6, "{got:?} vs {want:?}");
}

#[test]
fn rope_llama3_frequencies_match_transformers() {
    let cfg = ModelConfig::from_hf_file(&fixtures().join("tiny/llama/config.json")).unwrap();
    let rope = super::rope::Rope::new(&cfg);
    // transformers' `_compute_llama3_parameters` for this config, as f32 bit patterns.
    let want: [u32; 8] = [
        0x3f800000, 0x3e7a3ff4, 0x3c55af30, 0x3b8186e3, 0x3aa3d70a, 0x39cf3e38, 0x3903126f,
        0x3825cb60,
    ];
    let got: Vec<u32> = rope.inv_freq.iter().map(|f| f.to_bits()).collect();
    assert_eq!(got, want);
}

#[test]
fn packed_segments_do_not_attend_across_samples() {
    let model = load_tiny("llama", Dtype::F32).model;
    let device = CpuDevice;
    let a: Vec<u32> = vec![5, 17, 42, 99];
    let b: Vec<u32> = vec![1, 200, 31, 8, 77];
    let packed: Vec<u32> = a.iter().chain(&b).copied().collect();
    let positions: Vec<i64> = (0..a.len() as i64).chain(0..b.len() as i64).collect();
    let segments: Vec<i64> = a.iter().map(|_| 1).chain(b.iter().map(|_| 2)).collect();
    let input = ForwardInput::from_rows(std::slice::from_ref(&packed), &device)
        .with_positions(int_tensor(&[positions], &device))
        .with_segments(int_tensor(&[segments], &device));
    let logits = model.forward(input, None);
    let v = model.config.vocab_size;
    let flat = logits.into_data().to_vec::<f32>().unwrap();
    let alone_a = logits_of(&model, &a);
    let alone_b = logits_of(&model, &b);
    for (i, row) in alone_a.iter().enumerate() {
        assert!(
            max_abs_diff(&flat[i * v..(i + 1) * v], row) < 1e-5,
            "sample a position {i}"
        );
    }
    for (i, row) in alone_b.iter().enumerate() {
        let j = a.len() + i;
        assert!(
            max_abs_diff(&flat[j * v..(j + 1) * v], row) < 1e-5,
            "sample b position {i}"
        );
    }
    // Without segments the second sample sees the first, so it must differ.
    let unsegmented = logits_of(&model, &packed);
    assert!(max_abs_diff(&unsegmented[a.len() + 1], &alone_b[1]) > 1e-3);
}

fn check_incremental(model: &Llama<B>, ids: &[u32], chunks: &[usize]) {
    let full = logits_of(model, ids);
    let mut cache = model.new_cache();
    let mut pos = 0;
    for &n in chunks {
        let input = ForwardInput::from_rows(&[ids[pos..pos + n].to_vec()], &CpuDevice);
        let logits = model.forward(input, Some(&mut cache));
        let v = model.config.vocab_size;
        let flat = logits.into_data().to_vec::<f32>().unwrap();
        for i in 0..n {
            let d = max_abs_diff(&flat[i * v..(i + 1) * v], &full[pos + i]);
            assert!(d < 1e-4, "position {}: incremental differs by {d}", pos + i);
        }
        pos += n;
    }
    assert_eq!(cache.len(), ids.len());
}

#[test]
fn kv_cache_matches_full_forward() {
    let ids: Vec<u32> = vec![1, 200, 31, 8, 77, 154, 9, 240, 33, 61, 102, 255];
    for name in ["qwen2", "qwen3", "llama"] {
        let model = load_tiny(name, Dtype::F32).model;
        check_incremental(&model, &ids, &[5, 1, 1, 1, 1, 1, 1, 1]);
        check_incremental(&model, &ids, &[3, 3, 2, 4]);
    }
}

#[test]
fn sliding_window_is_consistent_with_the_cache() {
    let mut model = load_tiny("mistral", Dtype::F32).model;
    let ids: Vec<u32> = vec![1, 200, 31, 8, 77, 154, 9, 240, 33, 61];
    let unwindowed = logits_of(&model, &ids);
    model.config.sliding_window = Some(3);
    check_incremental(&model, &ids, &[4, 1, 1, 2, 1, 1]);
    let windowed = logits_of(&model, &ids);
    // Identical while the window covers the whole prefix, different after.
    assert!(max_abs_diff(&windowed[2], &unwindowed[2]) < 1e-6);
    assert!(max_abs_diff(&windowed[9], &unwindowed[9]) > 1e-4);
}

#[test]
fn padded_batch_generation_matches_single_prompts() {
    let model = load_tiny("llama", Dtype::F32).model;
    let prompts = vec![
        vec![1u32, 45, 12],
        vec![1, 45, 12, 190, 77, 5, 9],
        vec![3u32],
    ];
    let opts = GenerateOptions {
        max_new_tokens: 10,
        ..Default::default()
    };
    let mut streamed = vec![Vec::new(); prompts.len()];
    let batched = generate(&model, &prompts, &opts, None, &mut |row, tok| {
        streamed[row].push(tok)
    })
    .unwrap();
    assert_eq!(streamed, batched.tokens);
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(batched.tokens[i], greedy(&model, p, 10), "prompt {i}");
    }
    assert_eq!(batched.prompt_tokens, 11);
}

#[test]
fn generation_stops_on_eos_and_sampling_is_seeded() {
    let model = load_tiny("llama", Dtype::F32).model;
    let prompt = vec![1u32, 45, 12, 190, 77];
    let free = greedy(&model, &prompt, 16);
    let eos = free[3];
    let opts = GenerateOptions {
        max_new_tokens: 16,
        eos_ids: vec![eos],
        ..Default::default()
    };
    let out = generate(
        &model,
        std::slice::from_ref(&prompt),
        &opts,
        None,
        &mut |_, _| {},
    )
    .unwrap();
    let first = free.iter().position(|&t| t == eos).unwrap();
    assert_eq!(out.tokens[0], free[..=first].to_vec());
    assert_eq!(out.finish[0], super::generate::FinishReason::Eos);

    let sample = |seed: u64, temperature: f32, top_k: usize| {
        let opts = GenerateOptions {
            max_new_tokens: 16,
            sampling: Sampling {
                temperature,
                top_k,
                top_p: 0.95,
                repetition_penalty: 1.1,
                seed,
            },
            ..Default::default()
        };
        generate(
            &model,
            std::slice::from_ref(&prompt),
            &opts,
            None,
            &mut |_, _| {},
        )
        .unwrap()
        .tokens
        .remove(0)
    };
    assert_eq!(sample(7, 1.0, 0), sample(7, 1.0, 0));
    assert_ne!(sample(7, 1.5, 0), sample(8, 1.5, 0));
    let no_penalty_greedy = greedy(&model, &prompt, 16);
    let top1 = {
        let opts = GenerateOptions {
            max_new_tokens: 16,
            sampling: Sampling {
                temperature: 1.0,
                top_k: 1,
                top_p: 1.0,
                repetition_penalty: 1.0,
                seed: 3,
            },
            ..Default::default()
        };
        generate(
            &model,
            std::slice::from_ref(&prompt),
            &opts,
            None,
            &mut |_, _| {},
        )
        .unwrap()
        .tokens
        .remove(0)
    };
    assert_eq!(top1, no_penalty_greedy);
}

#[test]
fn sampling_filters_behave() {
    use super::generate::sample_token;
    use super::rng::Rng;
    let mut rng = Rng::new(1);
    // top_p 0.5 keeps only the most likely token here.
    let s = Sampling {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.5,
        repetition_penalty: 1.0,
        seed: 0,
    };
    for _ in 0..50 {
        let mut logits = vec![0.0f32, 3.0, 1.0, -1.0];
        assert_eq!(sample_token(&mut logits, &[], &s, &mut rng), 1);
    }
    // Repetition penalty divides positive logits and multiplies negative ones.
    let mut logits = vec![2.0f32, -2.0, 1.9];
    let g = Sampling {
        repetition_penalty: 2.0,
        ..Sampling::greedy()
    };
    assert_eq!(sample_token(&mut logits, &[0, 1, 0], &g, &mut rng), 2);
    assert_eq!(logits, vec![1.0, -4.0, 1.9]);
    // Temperature sampling follows the distribution.
    let t = Sampling {
        temperature: 1.0,
        top_k: 2,
        top_p: 1.0,
        repetition_penalty: 1.0,
        seed: 0,
    };
    let mut counts = [0usize; 3];
    for _ in 0..4000 {
        let mut logits = vec![0.0f32, (3.0f32).ln(), -10.0];
        counts[sample_token(&mut logits, &[], &t, &mut rng) as usize] += 1;
    }
    assert_eq!(counts[2], 0);
    let frac = counts[1] as f64 / 4000.0;
    assert!((frac - 0.75).abs() < 0.03, "{counts:?}");
}

// ---------------------------------------------------------------------------------------------
// Loading, saving, initialisation, corrupted files.

fn all_tensors(model: &Llama<B>) -> Vec<(String, Vec<f32>, Vec<usize>)> {
    model
        .hf_tensors()
        .into_iter()
        .map(|(n, t)| {
            let (v, s) = t.to_f32();
            (n, v, s)
        })
        .collect()
}

fn assert_bit_equal(a: &[(String, Vec<f32>, Vec<usize>)], b: &[(String, Vec<f32>, Vec<usize>)]) {
    assert_eq!(a.len(), b.len());
    for ((na, va, sa), (nb, vb, sb)) in a.iter().zip(b) {
        assert_eq!(na, nb);
        assert_eq!(sa, sb, "{na}");
        let bits_a: Vec<u32> = va.iter().map(|x| x.to_bits()).collect();
        let bits_b: Vec<u32> = vb.iter().map(|x| x.to_bits()).collect();
        assert!(bits_a == bits_b, "{na} differs");
    }
}

#[test]
fn save_load_round_trips_bit_exactly() {
    use super::load::{SaveDtype, save_hf};
    let tmp = tempfile::tempdir().unwrap();
    for name in ["llama", "qwen2", "qwen3"] {
        let original = load_tiny(name, Dtype::F32).model;
        let dir = tmp.path().join(name);
        save_hf(&original, &dir, SaveDtype::F32).unwrap();
        let back = load_model::<B>(&dir, &CpuDevice, Dtype::F32).unwrap();
        assert_eq!(back.config.to_hf_json()["model_type"], name);
        assert_bit_equal(&all_tensors(&original), &all_tensors(&back.model));
        assert_eq!(
            back.config,
            ModelConfig {
                torch_dtype: Some("float32".into()),
                ..original.config.clone()
            }
        );
    }
    // bf16: the bf16 checkpoint survives load -> save(bf16) -> load unchanged, byte for byte.
    let bf = load_tiny("qwen2-bf16", Dtype::F32).model;
    let dir = tmp.path().join("bf16");
    save_hf(&bf, &dir, SaveDtype::Bf16).unwrap();
    let back = load_model::<B>(&dir, &CpuDevice, Dtype::Bf16).unwrap();
    assert_eq!(back.model.dtype, DType::BF16);
    assert_bit_equal(&all_tensors(&bf), &all_tensors(&back.model));
    let dir2 = tmp.path().join("bf16-again");
    save_hf(&back.model, &dir2, SaveDtype::Bf16).unwrap();
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).unwrap(),
        std::fs::read(dir2.join("model.safetensors")).unwrap()
    );
    // f16 is lossy but loads.
    save_hf(&bf, &tmp.path().join("f16"), SaveDtype::F16).unwrap();
    load_model::<B>(&tmp.path().join("f16"), &CpuDevice, Dtype::F32).unwrap();
}

#[test]
fn bf16_compute_stays_close_to_f32() {
    let f = load_tiny("qwen2-bf16", Dtype::F32).model;
    let b = load_tiny("qwen2-bf16", Dtype::Bf16).model;
    let ids = [1u32, 200, 31, 8, 77, 154, 9];
    let lf = logits_of(&f, &ids);
    let lb = logits_of(&b, &ids);
    // bf16 keeps ~3 significant digits through every layer: compare relative L2 error per row.
    for (x, y) in lf.iter().zip(&lb) {
        let num: f32 = x
            .iter()
            .zip(y)
            .map(|(a, b)| (a - b).powi(2))
            .sum::<f32>()
            .sqrt();
        let den: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        eprintln!(
            "bf16 relative error {:.4}, max abs diff {}",
            num / den,
            max_abs_diff(x, y)
        );
        assert!(
            num / den < 0.05,
            "bf16 drifted: relative error {}",
            num / den
        );
    }
}

#[test]
fn seeded_init_is_deterministic() {
    let cfg = ModelConfig::tiny(super::config::Arch::Qwen2);
    let device = CpuDevice;
    let a = all_tensors(&Llama::<B>::init(&cfg, 42, &device, Dtype::F32).unwrap());
    let b = all_tensors(&Llama::<B>::init(&cfg, 42, &device, Dtype::F32).unwrap());
    let c = all_tensors(&Llama::<B>::init(&cfg, 43, &device, Dtype::F32).unwrap());
    assert_bit_equal(&a, &b);
    let (_, wa, _) = a
        .iter()
        .find(|(n, _, _)| n == "model.layers.0.mlp.up_proj.weight")
        .unwrap();
    let (_, wc, _) = c
        .iter()
        .find(|(n, _, _)| n == "model.layers.0.mlp.up_proj.weight")
        .unwrap();
    assert_ne!(wa, wc);
    let std = (wa.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / wa.len() as f64).sqrt();
    assert!((std - cfg.initializer_range).abs() < 0.002, "std {std}");
    for (n, v, s) in &a {
        if n.ends_with("norm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{n}");
        }
        if n.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{n}");
        }
        if n == "model.embed_tokens.weight" {
            assert!(v[..s[1]].iter().all(|&x| x == 0.0), "padding row");
        }
    }
}

#[test]
fn truncated_or_corrupted_safetensors_give_errors() {
    let src = fixtures().join("tiny/llama");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), tmp.path().join("config.json")).unwrap();
    let full = std::fs::read(src.join("model.safetensors")).unwrap();
    let target = tmp.path().join("model.safetensors");
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    let mut cuts: Vec<usize> = (0..16).collect();
    cuts.extend((0..60).map(|i| 16 + i * (header_end - 16) / 60));
    cuts.extend((0..40).map(|i| header_end + i * (full.len() - header_end) / 40));
    cuts.push(full.len() - 1);
    for cut in cuts {
        std::fs::write(&target, &full[..cut]).unwrap();
        assert!(
            load_model::<B>(tmp.path(), &CpuDevice, Dtype::F32).is_err(),
            "truncated at {cut} loaded"
        );
    }
    let mut rng = super::rng::Rng::new(9);
    for _ in 0..150 {
        let mut b = full.clone();
        let i = (rng.next_u64() % header_end as u64) as usize;
        b[i] ^= 1 << (rng.next_u64() % 8);
        std::fs::write(&target, &b).unwrap();
        let _ = load_model::<B>(tmp.path(), &CpuDevice, Dtype::F32);
    }
    // A corrupted config is an error too.
    std::fs::write(&target, &full).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        b"{\"model_type\": \"llama\", \"hidden_si",
    )
    .unwrap();
    assert!(load_model::<B>(tmp.path(), &CpuDevice, Dtype::F32).is_err());
}

/// Converts a tiny HF model to GGUF the way llama.cpp's `convert_hf_to_gguf.py` does (f32).
fn tiny_to_gguf(model: &Llama<B>) -> Vec<u8> {
    use super::gguf::{GgmlType, GgufValue, write_gguf};
    use super::gguf::{gguf_tensor_name, permute_rows};
    let c = &model.config;
    let meta = vec![
        (
            "general.architecture".to_string(),
            GgufValue::String("llama".into()),
        ),
        (
            "llama.block_count".into(),
            GgufValue::U32(c.num_hidden_layers as u32),
        ),
        (
            "llama.context_length".into(),
            GgufValue::U32(c.max_position_embeddings as u32),
        ),
        (
            "llama.embedding_length".into(),
            GgufValue::U32(c.hidden_size as u32),
        ),
        (
            "llama.feed_forward_length".into(),
            GgufValue::U32(c.intermediate_size as u32),
        ),
        (
            "llama.attention.head_count".into(),
            GgufValue::U32(c.num_attention_heads as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            GgufValue::U32(c.num_key_value_heads as u32),
        ),
        (
            "llama.rope.freq_base".into(),
            GgufValue::F32(c.rope_theta as f32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            GgufValue::F32(c.rms_norm_eps as f32),
        ),
        (
            "llama.vocab_size".into(),
            GgufValue::U32(c.vocab_size as u32),
        ),
    ];
    let tensors = all_tensors(model)
        .into_iter()
        .map(|(name, values, shape)| {
            let g = gguf_tensor_name(&name).unwrap();
            let values = if g.contains(".attn_q.") {
                permute_rows(&values, shape[0], shape[1], c.num_attention_heads)
            } else if g.contains(".attn_k.") {
                permute_rows(&values, shape[0], shape[1], c.num_key_value_heads)
            } else {
                values
            };
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (g, shape, GgmlType::F32, bytes)
        })
        .collect::<Vec<_>>();
    write_gguf(&meta, &tensors)
}

#[test]
fn gguf_llama_unpermutes_q_k_and_matches_safetensors() {
    let hf = load_tiny("mistral", Dtype::F32).model;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("tiny.gguf");
    let bytes = tiny_to_gguf(&hf);
    std::fs::write(&path, &bytes).unwrap();
    // A directory holding one .gguf also works.
    let gg = load_model::<B>(tmp.path(), &CpuDevice, Dtype::F32).unwrap();
    assert_bit_equal(&all_tensors(&hf), &all_tensors(&gg.model));
    let ids = [1u32, 200, 31, 8, 77];
    let (a, b) = (logits_of(&hf, &ids), logits_of(&gg.model, &ids));
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    // Truncating the file anywhere is an error.
    for i in 0..80 {
        let cut = i * bytes.len() / 80;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        assert!(
            load_model::<B>(&path, &CpuDevice, Dtype::F32).is_err(),
            "cut {cut}"
        );
    }
}

#[test]
fn unsupported_gguf_architecture_is_a_clear_error() {
    use super::gguf::{GgufFile, GgufValue, write_gguf};
    let bytes = write_gguf(
        &[(
            "general.architecture".into(),
            GgufValue::String("falcon".into()),
        )],
        &[],
    );
    let err = ModelConfig::from_gguf(&GgufFile::from_bytes(bytes).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("falcon") && err.contains("qwen2"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Training: autodiff through the model, LoRA beside a frozen base.

type AD = super::backend::CpuAutodiff;

/// HF causal-LM loss: position t predicts label t+1; -100 labels are ignored.
fn causal_lm_loss(logits: Tensor<AD, 3>, labels: &[Vec<i64>]) -> Tensor<AD, 1> {
    let [b, t, v] = logits.dims();
    let device = logits.device();
    let mut targets = Vec::new();
    let mut weights = Vec::new();
    for row in labels {
        for i in 0..t {
            let l = if i + 1 < t { row[i + 1] } else { -100 };
            targets.push(l.max(0));
            weights.push(if l >= 0 { 1.0f32 } else { 0.0 });
        }
    }
    let n: f32 = weights.iter().sum();
    let logp = burn::tensor::activation::log_softmax(logits, 2);
    let targets = Tensor::<AD, 3, Int>::from_data(TensorData::new(targets, [b, t, 1]), &device);
    let picked = logp.gather(2, targets).reshape([b * t]);
    let w = Tensor::<AD, 1>::from_data(TensorData::new(weights, [b * t]), &device);
    let _ = v;
    (picked * w).sum().neg().div_scalar(n)
}

#[test]
fn autodiff_loss_and_gradients_match_transformers() {
    let golden = read_json(&fixtures().join("tiny/llama/train_golden.json"));
    let device = CpuDevice;
    let model = load_model::<AD>(&fixtures().join("tiny/llama"), &device, Dtype::F32)
        .unwrap()
        .model;
    let rows: Vec<Vec<u32>> = golden["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(ids_of)
        .collect();
    let mask: Vec<Vec<i64>> = golden["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let labels: Vec<Vec<i64>> = golden["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect()
        })
        .collect();
    let input = ForwardInput::from_rows(&rows, &device).with_segments(int_tensor(&mask, &device));
    let loss = causal_lm_loss(model.forward(input, None), &labels);
    let value = loss.clone().into_scalar();
    let want = golden["loss"].as_f64().unwrap() as f32;
    assert!((value - want).abs() < 1e-4, "loss {value} vs {want}");
    let grads = loss.backward();
    let mut total = 0f64;
    let per_param = golden["per_param_grad_norm"].as_object().unwrap();
    for (name, t) in model.hf_tensors() {
        let g = match t {
            super::llama::HfTensor::Rank1(t) => t.grad(&grads).map(|g| g.into_data()),
            super::llama::HfTensor::Rank2(t) => t.grad(&grads).map(|g| g.into_data()),
        }
        .unwrap_or_else(|| panic!("no gradient for {name}"));
        let sq: f64 = g
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum();
        total += sq;
        if let Some(want) = per_param.get(&name) {
            let want = want.as_f64().unwrap();
            assert!(
                (sq.sqrt() - want).abs() < 1e-4 * want.max(1.0),
                "{name}: grad norm {} vs {want}",
                sq.sqrt()
            );
        }
    }
    let want = golden["grad_norm_f64"].as_f64().unwrap();
    assert!(
        (total.sqrt() - want).abs() < 1e-4 * want,
        "grad norm {} vs {want}",
        total.sqrt()
    );
}

#[test]
fn lora_trains_beside_a_frozen_base() {
    use super::linear::LoraConfig;
    let device = CpuDevice;
    let base = load_model::<AD>(&fixtures().join("tiny/qwen2"), &device, Dtype::F32)
        .unwrap()
        .model;
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: true,
        targets: vec!["q_proj".into(), "v_proj".into(), "down_proj".into()],
    };
    assert_eq!(cfg.scale(), 4.0);
    let ids = vec![vec![1u32, 200, 31, 8, 77, 154]];
    let before = base
        .forward(ForwardInput::from_rows(&ids, &device), None)
        .into_data();
    let model = base.with_lora(&cfg, 11).unwrap().freeze_base(true);
    assert_eq!(model.lora_tensors().len(), 2 * 3 * 2);
    // B starts at zero, so the adapted model starts equal to the base.
    let logits = model.forward(ForwardInput::from_rows(&ids, &device), None);
    assert_eq!(logits.to_data(), before);
    let grads = logits.sum().backward();
    for (name, t) in model.lora_tensors() {
        let g = t
            .grad(&grads)
            .unwrap_or_else(|| panic!("no gradient for {name}"));
        if name.ends_with("lora_B.weight") {
            let norm: f32 = g
                .into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| x * x)
                .sum();
            assert!(norm > 0.0, "{name} has a zero gradient");
        }
    }
    for (name, t) in model.hf_tensors() {
        let has = match t {
            super::llama::HfTensor::Rank1(t) => t.grad(&grads).is_some(),
            super::llama::HfTensor::Rank2(t) => t.grad(&grads).is_some(),
        };
        assert!(!has, "frozen {name} got a gradient");
    }
    // Merging gives the same function as the adapter beside the base.
    let mut with = load_model::<B>(&fixtures().join("tiny/qwen2"), &device, Dtype::F32)
        .unwrap()
        .model
        .with_lora(&cfg, 11)
        .unwrap();
    for layer in &mut with.layers {
        let lora = layer.self_attn.q_proj.lora.as_mut().unwrap();
        lora.b = burn::module::Param::from_tensor(lora.b.val().add_scalar(0.01));
    }
    let a = logits_of(&with, &ids[0]);
    let merged = with.merge_lora();
    assert!(merged.lora_tensors().is_empty());
    let b = logits_of(&merged, &ids[0]);
    for (x, y) in a.iter().zip(&b) {
        assert!(max_abs_diff(x, y) < 1e-4);
    }
}

// ---------------------------------------------------------------------------------------------
// Generation requests are bounded and validated.

#[test]
fn a_prompt_must_leave_room_in_the_context_and_answers_stop_at_its_end() {
    let model = load_tiny("llama", Dtype::F32).model;
    let context = model.config.max_position_embeddings;
    let opts = GenerateOptions {
        max_new_tokens: 1_000,
        ..GenerateOptions::default()
    };
    let too_long = vec![vec![5u32; context]];
    let err = generate(&model, &too_long, &opts, None, &mut |_, _| {}).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("the prompt has {context} tokens"))
            && msg.contains(&format!("context holds {context}")),
        "{msg}"
    );
    // A prompt just short of the context gets the rest of it, not `max_new_tokens`.
    let near = vec![vec![5u32; context - 3]];
    let out = generate(&model, &near, &opts, None, &mut |_, _| {}).unwrap();
    assert_eq!(out.tokens[0].len(), 3);
}

#[test]
fn sampling_settings_out_of_range_are_refused() {
    let model = load_tiny("llama", Dtype::F32).model;
    let prompt = vec![vec![1u32, 2, 3]];
    let cases = [
        (f32::NAN, 1.0, 1.0, "temperature is NaN"),
        (-0.5, 1.0, 1.0, "temperature is -0.5"),
        (0.7, 0.0, 1.0, "top_p is 0"),
        (0.7, 1.5, 1.0, "top_p is 1.5"),
        (0.7, 1.0, 0.0, "repetition penalty is 0"),
        (0.7, 1.0, f32::INFINITY, "repetition penalty is inf"),
    ];
    for (temperature, top_p, repetition_penalty, expected) in cases {
        let opts = GenerateOptions {
            max_new_tokens: 2,
            sampling: Sampling {
                temperature,
                top_p,
                repetition_penalty,
                ..Sampling::greedy()
            },
            ..GenerateOptions::default()
        };
        let err = generate(&model, &prompt, &opts, None, &mut |_, _| {}).unwrap_err();
        assert!(err.to_string().contains(expected), "{err} ∌ {expected}");
    }
}

#[test]
fn throughput_of_nothing_is_zero() {
    let model = load_tiny("llama", Dtype::F32).model;
    let opts = GenerateOptions {
        max_new_tokens: 0,
        ..GenerateOptions::default()
    };
    let out = generate(&model, &[vec![1u32, 2, 3]], &opts, None, &mut |_, _| {}).unwrap();
    assert!(out.tokens[0].is_empty());
    assert_eq!(out.prompt_tokens_per_sec(), 0.0);
    assert_eq!(out.gen_tokens_per_sec(), 0.0);
}

/// Hostile generation requests: prompts from empty to past the context, ids outside the vocabulary,
/// every sampling setting from NaN to huge, `max_new_tokens` up to `usize::MAX`. Each is answered within
/// the context or refused with an error; none panics.
#[test]
fn random_requests_are_answered_within_the_context_or_refused() {
    let model = load_tiny("llama", Dtype::F32).model;
    let context = model.config.max_position_embeddings;
    let vocab = model.config.vocab_size as u64;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |n: u64| {
        // xorshift64*: enough to spread cases, and the same cases every run.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    };
    // A hostile value a quarter of the time, else a sensible one.
    let hostile = [f32::NAN, f32::INFINITY, -1.0, 0.0, 1e30];
    let sensible = [1e-30, 0.5, 0.9, 1.0, 1.5];
    let float = |next: &mut dyn FnMut(u64) -> u64| {
        let pool = if next(4) == 0 { &hostile } else { &sensible };
        pool[next(pool.len() as u64) as usize]
    };
    let budgets = [0, 1, 3, 1_000, usize::MAX];
    let (mut answered, mut refused) = (0, 0);
    const CASES: usize = 150;
    for case in 0..CASES {
        let rows = 1 + next(3) as usize;
        // One case in ten has ids just past the vocabulary.
        let past_vocab = next(10) == 0;
        let mut prompts: Vec<Vec<u32>> = (0..rows)
            .map(|_| {
                let len = next(context as u64 + 8) as usize;
                (0..len).map(|_| next(vocab) as u32).collect()
            })
            .collect();
        if past_vocab && let Some(p) = prompts.iter_mut().find(|p| !p.is_empty()) {
            p[0] = (vocab + next(4)) as u32;
        }
        let opts = GenerateOptions {
            max_new_tokens: budgets[next(budgets.len() as u64) as usize],
            sampling: Sampling {
                temperature: float(&mut next),
                top_k: next(5) as usize,
                top_p: float(&mut next),
                repetition_penalty: float(&mut next),
                seed: case as u64,
            },
            ..Default::default()
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            generate(&model, &prompts, &opts, None, &mut |_, _| {})
        }));
        match result {
            Err(_) => panic!("case {case} panicked: {prompts:?} {opts:?}"),
            Ok(Ok(out)) => {
                answered += 1;
                for (p, t) in prompts.iter().zip(&out.tokens) {
                    assert!(
                        p.len() + t.len() <= context,
                        "case {case} ran past the context: {} + {} > {context}, lens {:?}, {opts:?}",
                        p.len(),
                        t.len(),
                        prompts.iter().map(Vec::len).collect::<Vec<_>>()
                    );
                    assert!(t.len() <= opts.max_new_tokens, "case {case}");
                    assert!(t.iter().all(|&id| (id as u64) < vocab), "case {case}");
                }
            }
            Ok(Err(e)) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    eprintln!("{CASES} requests: {answered} answered, {refused} refused");
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );
}

/// LoRA on the SmolLM2 Q4_1 file kept in its blocks: the model holds the projections in about an
/// eighth of the f32 bytes, and computes the same logits and LoRA gradients, bit for bit, as the
/// model dequantised at load (the Q/K rows llama.cpp permuted are put back in block rows).
#[test]
fn smollm2_gguf_kept_in_its_blocks_computes_what_the_dequantised_model_does() {
    use super::backend::CpuAutodiff;
    use super::linear::LoraConfig;
    use super::llama::BuildOptions;
    use super::load::load_model_with;
    let path = smollm2_gguf();
    let lora = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        rslora: false,
        targets: vec!["q_proj".into(), "down_proj".into()],
    };
    let load = |options| {
        load_model_with::<CpuAutodiff>(&path, &CpuDevice, Dtype::F32, options)
            .unwrap()
            .model
            .with_lora(&lora, 3)
            .unwrap()
            .freeze_base(true)
    };
    let dense = load(BuildOptions::default());
    let kept = load(BuildOptions::KEEP_QUANTIZED);
    let (dense_bytes, none) = dense.linear_bytes();
    let (rest, kept_bytes) = kept.linear_bytes();
    assert_eq!((none, rest), (0, 0));
    // Q4_1: 20 bytes per 32 weights, against 128 in f32.
    assert_eq!(kept_bytes * 128, dense_bytes * 20);

    let ids = vec![
        vec![1u32, 504, 3458, 282, 4649, 314, 2],
        vec![1, 28, 940, 30, 7, 9, 11],
    ];
    let run = |m: &Llama<CpuAutodiff>| {
        let logits = m.forward(ForwardInput::from_rows(&ids, &CpuDevice), None);
        let weights = Tensor::<CpuAutodiff, 3>::from_data(
            TensorData::new(
                (0..logits.shape().num_elements())
                    .map(|i| ((i % 97) as f32 - 48.0) / 1000.0)
                    .collect::<Vec<_>>(),
                logits.dims(),
            ),
            &CpuDevice,
        );
        let grads = (logits.clone() * weights).sum().backward();
        let l0 = &m.layers[0];
        let grad_bits = |t: Tensor<CpuAutodiff, 2>| -> Vec<u32> {
            let g = t.grad(&grads).expect("a LoRA matrix gets a gradient");
            g.into_data()
                .to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let q = l0.self_attn.q_proj.lora.as_ref().unwrap();
        let d = l0.mlp.down_proj.lora.as_ref().unwrap();
        let logit_bits: Vec<u32> = logits
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        (logit_bits, grad_bits(q.a.val()), grad_bits(d.a.val()))
    };
    let (dl, dq, dd) = run(&dense);
    let (kl, kq, kd) = run(&kept);
    assert!(dl == kl, "logits differ");
    assert!(dq == kq, "q_proj LoRA gradients differ");
    assert!(dd == kd, "down_proj LoRA gradients differ");
    // Merging dequantises: the same weights as the dense model's.
    let merged = kept.merge_lora();
    let dense_merged = dense.merge_lora();
    let w = |m: &Llama<CpuAutodiff>| {
        m.layers[3]
            .self_attn
            .k_proj
            .base
            .to_dense_on(&CpuDevice, DType::F32)
    };
    assert_eq!(
        w(&merged).into_data().to_vec::<f32>().unwrap(),
        w(&dense_merged).into_data().to_vec::<f32>().unwrap()
    );
}

/// Checkpoints bitsandbytes saved quantised (`scripts/goldens/bnb_checkpoint.py`: NF4 with double
/// quantisation, FP4 with plain scales, int8) load as transformers runs them with bitsandbytes'
/// dequantised weights, dequantised at load or kept in their blocks (the same logits, bit for bit).
#[test]
fn bitsandbytes_checkpoints_match_transformers() {
    use super::llama::BuildOptions;
    use super::load::load_model_with;
    for name in ["llama-bnb-nf4", "llama-bnb-fp4", "llama-bnb-int8"] {
        let dir = fixtures().join("tiny").join(name);
        let golden = read_json(&dir.join("golden.json"));
        let dense = load_tiny(name, Dtype::F32).model;
        let kept = load_model_with::<B>(&dir, &CpuDevice, Dtype::F32, BuildOptions::KEEP_QUANTIZED)
            .unwrap()
            .model;
        assert_eq!(dense.linear_bytes().1, 0, "{name}");
        assert_eq!(kept.linear_bytes().0, 0, "{name}");
        for seq in golden["sequences"].as_array().unwrap() {
            let ids = ids_of(&seq["input_ids"]);
            let got = logits_of(&dense, &ids);
            assert_eq!(got, logits_of(&kept, &ids), "{name}: kept vs dequantised");
            for (pos, want) in seq["logits"].as_array().unwrap().iter().enumerate() {
                let want = floats_of(want);
                let d = max_abs_diff(&got[pos], &want);
                assert!(d < 1e-4, "{name}: ids {ids:?} position {pos}: {d}");
            }
        }
    }
}
