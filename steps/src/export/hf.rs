//! Writing a Hugging Face model folder: `config.json`, `generation_config.json`, tokenizer files with
//! the chat template, and safetensors weights sharded by size with `model.safetensors.index.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Value as Json, json};

use lf_model::ModelArtifact;
use lf_model::SaveDtype;
use lf_model::artifact::TOKENIZER_FILES;
use lf_model::gguf::GgufFile;
use lf_model::llama::hf_tensor_shapes;
use lf_model::load::write_safetensors;
use lf_model::tokenizer_from_gguf;

/// Parses a size such as `5GB`, `500MB`, `2GiB`, `100kB` or `123456` (bytes). Decimal units
/// (`KB`/`kB`, `MB`, `GB`, `TB`) are powers of 1000 and binary ones (`KiB`, `MiB`, `GiB`, `TiB`)
/// powers of 1024, as in transformers' `max_shard_size`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size (e.g. `5GB`, `500MB`, `2GiB`)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{}`; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB",
                unit.trim()
            ));
        }
    };
    let bytes = (num * mult).round();
    if bytes < 1.0 {
        return Err(format!("`{text}` is not a positive size"));
    }
    Ok(bytes as u64)
}

/// Groups tensors of byte sizes `sizes` (in order) into shards of at most `max` bytes, as
/// transformers does: a tensor goes into the current shard unless that would exceed `max`, then a
/// new shard starts; a tensor larger than `max` ends up alone.
pub fn plan_shards(sizes: &[u64], max: u64) -> Vec<Vec<usize>> {
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut used = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if !current.is_empty() && used + size > max {
            shards.push(std::mem::take(&mut current));
            used = 0;
        }
        current.push(i);
        used += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// Bytes per element of a safetensors dtype.
pub fn dtype_bytes(dtype: SaveDtype) -> u64 {
    match dtype {
        SaveDtype::F32 => 4,
        SaveDtype::F16 | SaveDtype::Bf16 => 2,
    }
}

/// transformers' name of a dtype (`torch_dtype`).
pub fn torch_name(dtype: SaveDtype) -> &'static str {
    match dtype {
        SaveDtype::F32 => "float32",
        SaveDtype::F16 => "float16",
        SaveDtype::Bf16 => "bfloat16",
    }
}

/// What [`write_weights`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WeightFiles {
    /// The safetensors files, in order.
    pub files: Vec<String>,
    /// Total bytes of tensor data.
    pub total_size: u64,
    /// Number of parameters.
    pub parameters: u64,
}

/// Writes the (merged) weights of `model` into `dir` in `dtype`: `model.safetensors`, or shards of at
/// most `max_shard` bytes and `model.safetensors.index.json`.
pub fn write_weights(
    model: &ModelArtifact,
    dir: &Path,
    dtype: SaveDtype,
    max_shard: u64,
    mut progress: impl FnMut(),
) -> anyhow::Result<WeightFiles> {
    let shapes = hf_tensor_shapes(&model.config);
    let sizes: Vec<u64> = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64 * dtype_bytes(dtype))
        .collect();
    let shards = plan_shards(&sizes, max_shard);
    let n = shards.len();
    let file_of = |k: usize| {
        if n == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", k + 1)
        }
    };
    let mut shard_of = vec![0usize; shapes.len()];
    for (k, shard) in shards.iter().enumerate() {
        for &i in shard {
            shard_of[i] = k;
        }
    }
    let mut pending: Vec<(String, Vec<f32>, Vec<usize>)> = Vec::new();
    let mut current = 0usize;
    let mut index = 0usize;
    model.tensors(|name, shape, values| {
        pending.push((name.to_string(), values, shape.to_vec()));
        index += 1;
        progress();
        let last_of_shard = index == shapes.len() || shard_of[index] != current;
        if last_of_shard {
            let path = dir.join(file_of(current));
            write_safetensors(&path, std::mem::take(&mut pending), dtype)
                .with_context(|| format!("cannot write `{}`", path.display()))?;
            current += 1;
        }
        Ok(())
    })?;
    let total_size: u64 = sizes.iter().sum();
    let parameters: u64 = shapes
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64)
        .sum();
    if n > 1 {
        let weight_map: BTreeMap<&str, String> = shapes
            .iter()
            .zip(&shard_of)
            .map(|((name, _), &k)| (name.as_str(), file_of(k)))
            .collect();
        let index = json!({
            "metadata": {"total_size": total_size, "total_parameters": parameters},
            "weight_map": weight_map,
        });
        std::fs::write(
            dir.join("model.safetensors.index.json"),
            serde_json::to_string_pretty(&index)? + "\n",
        )?;
    }
    Ok(WeightFiles {
        files: (0..n).map(file_of).collect(),
        total_size,
        parameters,
    })
}

/// Writes `config.json`: the base's own (every key kept) with `torch_dtype` set to `dtype`, or, for a
/// GGUF base, the config lf derived from its metadata.
pub fn write_config(model: &ModelArtifact, dir: &Path, dtype: SaveDtype) -> anyhow::Result<()> {
    let mut config = match &model.config_json {
        Some(j) => j.clone(),
        None => model.config.to_hf_json(),
    };
    if let Some(obj) = config.as_object_mut() {
        obj.insert("torch_dtype".into(), torch_name(dtype).into());
        if obj.contains_key("dtype") {
            obj.insert("dtype".into(), torch_name(dtype).into());
        }
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(&config)? + "\n",
    )?;
    Ok(())
}

/// Writes `generation_config.json`: the base's, else one with the config's special token ids.
pub fn write_generation_config(model: &ModelArtifact, dir: &Path) -> anyhow::Result<()> {
    let src = model.base_dir().join("generation_config.json");
    if model.config_json.is_some() && src.is_file() {
        std::fs::copy(&src, dir.join("generation_config.json"))
            .with_context(|| format!("cannot copy `{}`", src.display()))?;
        return Ok(());
    }
    std::fs::write(
        dir.join("generation_config.json"),
        serde_json::to_string_pretty(&model.config.generation_config())? + "\n",
    )?;
    Ok(())
}

/// Writes the tokenizer files into `dir`: copied from the model's tokenizer folder, or built from the
/// GGUF metadata. When `template` is given it becomes the chat template (in `chat_template.jinja` if
/// the model keeps it there, else in `tokenizer_config.json`). Returns the chat template written.
pub fn write_tokenizer(
    model: &ModelArtifact,
    dir: &Path,
    template: Option<&str>,
) -> anyhow::Result<Option<String>> {
    let src = &model.tokenizer_dir;
    if src.join("tokenizer.json").is_file() {
        for name in TOKENIZER_FILES {
            let from = src.join(name);
            if from.is_file() {
                std::fs::copy(&from, dir.join(name))
                    .with_context(|| format!("cannot copy `{}`", from.display()))?;
            }
        }
    } else {
        write_tokenizer_from_gguf(model, dir)?;
    }
    let jinja = dir.join("chat_template.jinja");
    let cfg_path = dir.join("tokenizer_config.json");
    if let Some(t) = template {
        if jinja.is_file() {
            std::fs::write(&jinja, t)?;
        } else {
            let mut cfg: Json = match std::fs::read_to_string(&cfg_path) {
                Ok(text) => serde_json::from_str(&text)
                    .with_context(|| format!("cannot parse `{}`", cfg_path.display()))?,
                Err(_) => json!({}),
            };
            if let Some(obj) = cfg.as_object_mut() {
                obj.insert("chat_template".into(), t.into());
            }
            std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg)? + "\n")?;
        }
    }
    let bundle = lf_model::TokenizerBundle::from_hf_dir(dir)
        .with_context(|| format!("the tokenizer written to `{}` does not load", dir.display()))?;
    Ok(bundle.chat_template)
}

fn write_tokenizer_from_gguf(model: &ModelArtifact, dir: &Path) -> anyhow::Result<()> {
    let lf_model::load::ModelFormat::Gguf(file) = &model.base else {
        anyhow::bail!(
            "`{}` has no tokenizer (`tokenizer.json` or a `.gguf` file)",
            model.tokenizer_dir.display()
        );
    };
    let gguf = GgufFile::open(file)?;
    let b = tokenizer_from_gguf(&gguf)
        .with_context(|| format!("cannot read the tokenizer of `{}`", file.display()))?;
    b.tokenizer
        .save(dir.join("tokenizer.json"), false)
        .map_err(|e| anyhow::anyhow!("cannot write tokenizer.json: {e}"))?;
    let mut cfg = serde_json::Map::new();
    let mut map = serde_json::Map::new();
    for (key, value) in [
        ("bos_token", &b.bos_token),
        ("eos_token", &b.eos_token),
        ("pad_token", &b.pad_token),
        ("unk_token", &b.unk_token),
    ] {
        if let Some(v) = value {
            cfg.insert(key.into(), v.clone().into());
            map.insert(key.into(), v.clone().into());
        }
    }
    cfg.insert("add_bos_token".into(), b.add_bos.into());
    cfg.insert("add_eos_token".into(), false.into());
    cfg.insert("clean_up_tokenization_spaces".into(), false.into());
    cfg.insert(
        "model_max_length".into(),
        model.config.max_position_embeddings.into(),
    );
    cfg.insert("tokenizer_class".into(), "PreTrainedTokenizerFast".into());
    if let Some(t) = &b.chat_template {
        cfg.insert("chat_template".into(), t.clone().into());
    }
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&Json::Object(cfg))? + "\n",
    )?;
    std::fs::write(
        dir.join("special_tokens_map.json"),
        serde_json::to_string_pretty(&Json::Object(map))? + "\n",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_transformers() {
        assert_eq!(parse_size("5GB").unwrap(), 5_000_000_000);
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 * 1024 * 1024 * 1024);
        assert_eq!(parse_size("100kB").unwrap(), 100_000);
        assert_eq!(parse_size("1.5 GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("12345").unwrap(), 12345);
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("GB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn shards_fill_greedily_and_big_tensors_stand_alone() {
        assert_eq!(plan_shards(&[3, 3, 3], 10), vec![vec![0, 1, 2]]);
        assert_eq!(plan_shards(&[4, 4, 4], 10), vec![vec![0, 1], vec![2]]);
        assert_eq!(
            plan_shards(&[2, 20, 2, 2], 10),
            vec![vec![0], vec![1], vec![2, 3]]
        );
        assert!(plan_shards(&[], 10).is_empty());
    }
}
