//! The whole of a `dataset` step, apart from the engine: load, convert, mix, encode (on every core),
//! split, pack, and write the artifact.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lf_engine::progress::Progress;
use lf_schemas::kinds::dataset::{DatasetParams, DatasetSource, Format, Mix, Stage, TemplateName};
use rand::{Rng as _, SeedableRng as _};
use rayon::prelude::*;
use serde_json::{Value as Json, json};
use tracing::warn;

use super::artifact::{
    DatasetInfo, FORMAT, SourceInfo, SplitData, SplitInfo, TemplateInfo, VERSION, write_split,
};
use super::chat::{ChatTemplate, builtin};
use super::encode::{Dropped, Encoded, Encoder, Flags, IGNORE, Outcome, Settings};
use super::error::{DataError, Origin, list};
use super::files::{FileKind, Row, Several, find, read_rows, read_text_lines};
use super::format::{Layout, Message, Role, Sample, dataset_info_entry, resolve};
use super::pack::{Key, Table, blocks, hash_order, key_of, pack, split, split_grouped, val_count};
use super::tokenizer::ModelTokenizer;

/// How many rows [`pair_kl_replies`] looks at to find a reply to another prompt.
const KL_SEARCH: usize = 64;

/// How many samples `preview.jsonl` keeps.
pub const PREVIEW_ROWS: usize = 16;

/// The resolved inputs of a dataset step.
#[derive(Debug, Clone)]
pub struct Inputs {
    /// The model's artifact folder.
    pub model: PathBuf,
    /// Each dataset's source path (`None` for built-ins).
    pub sources: Vec<Option<PathBuf>>,
}

/// One converted row.
struct Item {
    key: Key,
    /// The row it comes from (the two halves of a preference row unpaired for KTO share it; for
    /// every other row it is `key`).
    group: Key,
    sample: Sample,
    /// Where the row comes from, to name it when it is dropped.
    origin: Origin,
}

/// Builds the artifact into `out`, returning its `info.json`.
pub fn build(
    p: &DatasetParams,
    inputs: &Inputs,
    out: &Path,
    progress: &Progress,
) -> anyhow::Result<DatasetInfo> {
    let tok = ModelTokenizer::load(&inputs.model)
        .with_context(|| format!("cannot load the tokenizer of step `{}`", p.model))?;
    let mut notes = Vec::new();
    let template = match p.stage {
        Stage::Pt => {
            anyhow::ensure!(
                tok.eos_id.is_some(),
                "the tokenizer has no EOS token; pretraining separates documents with it"
            );
            None
        }
        Stage::Sft | Stage::Rm | Stage::Kto => Some(choose_template(p, &tok, &mut notes)?),
    };

    // Load and convert every dataset.
    let mut per_dataset: Vec<Vec<Item>> = Vec::new();
    let mut sources = Vec::new();
    for (i, d) in p.datasets.iter().enumerate() {
        let (items, info) = load_dataset(p.stage, d, inputs.sources[i].as_deref())
            .with_context(|| format!("in `datasets[{i}]` (`{}`)", d.source))?;
        per_dataset.push(items);
        sources.push(info);
    }
    for (i, info) in sources.iter().enumerate() {
        if info.rows == 0 {
            let note = format!(
                "`datasets[{i}]` ({}) holds no rows",
                describe_files(&info.files)
            );
            if sources.iter().any(|s| s.rows > 0) {
                warn!("{note}");
                notes.push(note);
            }
        }
    }
    let mut items = mix(p, per_dataset);
    if p.stage == Stage::Kto
        && let Some(note) = pair_kl_replies(&mut items)
    {
        warn!("{note}");
        notes.push(note);
    }
    let rows = items.len();
    if rows == 0 {
        let empty: Vec<String> = sources
            .iter()
            .enumerate()
            .map(|(i, s)| format!("`datasets[{i}]` ({})", describe_files(&s.files)))
            .collect();
        anyhow::bail!(
            "the datasets hold no rows: {} {} empty\n\
             hint: a JSON file holds an array of rows, a JSONL file one row per line, a CSV file a header and rows",
            empty.join(", "),
            if empty.len() == 1 { "is" } else { "are" }
        );
    }
    let placeholders = items
        .iter()
        .filter(|it| has_placeholder(&it.sample))
        .count();
    if placeholders > 0 {
        let note = format!(
            "{placeholders} rows hold `{{{{ … }}}}` placeholders: render them with a `template` step first (its `vars` fill them in)"
        );
        warn!("{note}");
        notes.push(note);
    }

    // Encode, in parallel, in order.
    let settings = Settings {
        stage: p.stage,
        cutoff_len: p.cutoff_len,
        truncation: p.truncation,
        train_on_prompt: p.train_on_prompt,
        mask_history: p.mask_history,
    };
    let encoder = Encoder::new(&tok, template.as_ref().map(|(t, _)| t), settings);
    let bar = progress.bar(rows as u64, "rows");
    let outcomes: Vec<Outcome> = items
        .par_iter()
        .map(|it| {
            let o = encoder.encode(&it.sample);
            bar.inc(1);
            o
        })
        .collect();
    bar.finish_and_clear();

    // Count what was left out.
    let mut first_detail: BTreeMap<Dropped, String> = BTreeMap::new();
    let mut dropped_at: BTreeMap<Dropped, Vec<&Origin>> = BTreeMap::new();
    let mut dropped_rows = String::new();
    let (mut truncated, mut mismatch, mut searched) = (0, 0, 0);
    for (it, o) in items.iter().zip(&outcomes) {
        let flags = match o {
            Outcome::Dropped(why, detail) => {
                if let Some(d) = detail {
                    first_detail.entry(*why).or_insert_with(|| d.clone());
                }
                dropped_at.entry(*why).or_default().push(&it.origin);
                let line = serde_json::json!({
                    "file": &*it.origin.file,
                    "row": it.origin.pos.number(),
                    "reason": why.name(),
                    "detail": detail,
                });
                dropped_rows.push_str(&line.to_string());
                dropped_rows.push('\n');
                continue;
            }
            Outcome::Seq { flags, .. }
            | Outcome::Pair { flags, .. }
            | Outcome::Feedback { flags, .. } => *flags,
            Outcome::Doc(_) => Flags::default(),
        };
        truncated += usize::from(flags.truncated);
        mismatch += usize::from(flags.prefix_mismatch);
        searched += usize::from(flags.searched);
    }
    let dropped: BTreeMap<String, usize> = dropped_at
        .iter()
        .map(|(why, at)| (why.name().to_string(), at.len()))
        .collect();
    for (why, at) in &dropped_at {
        let n = at.len();
        let shown: Vec<String> = at
            .iter()
            .take(SHOWN_DROPPED)
            .map(|o| o.to_string())
            .collect();
        let more = if n > SHOWN_DROPPED {
            format!(" and {} more (all in `dropped.jsonl`)", n - SHOWN_DROPPED)
        } else {
            String::new()
        };
        let because = first_detail
            .get(why)
            .map(|d| format!("; the first because: {d}"))
            .unwrap_or_default();
        let rows = if n == 1 { "row" } else { "rows" };
        let note = format!(
            "{n} {rows} dropped as {}: {}{more}{because}",
            why.name(),
            shown.join(", ")
        );
        warn!("{note}");
        notes.push(note);
    }
    if !dropped_rows.is_empty() {
        std::fs::write(out.join("dropped.jsonl"), &dropped_rows)?;
    }
    let dropped_total: usize = dropped.values().sum();
    let kept = rows - dropped_total;
    if kept == 0 {
        anyhow::bail!(
            "no usable rows: all {rows} were dropped ({}){}",
            describe_dropped(&dropped),
            hint_for(&dropped, &first_detail)
        );
    }
    if dropped_total > 0 {
        warn!(
            "{dropped_total} of {rows} rows dropped ({})",
            describe_dropped(&dropped)
        );
    }
    if mismatch > 0 {
        let note = format!(
            "{mismatch} rows: the prompt's own tokens are not a prefix of the row's tokens (a token spans the prompt/reply boundary and is left untrained)"
        );
        warn!("{note}");
        notes.push(note);
    }

    // Keep the encoded rows with their keys and texts.
    let mut kept_items = Vec::with_capacity(kept);
    let mut groups = Vec::with_capacity(kept);
    for (it, o) in items.iter().zip(outcomes) {
        if !matches!(o, Outcome::Dropped(..)) {
            kept_items.push((it.key, o));
            groups.push(it.group);
        }
    }
    let keys: Vec<Key> = kept_items.iter().map(|(k, _)| *k).collect();
    let val_n = val_count(kept, p.val_size).map_err(|m| anyhow::anyhow!(m))?;
    let (train_idx, val_idx) = if p.stage == Stage::Kto {
        split_grouped(&groups, &keys, val_n, p.seed, p.shuffle).map_err(|m| anyhow::anyhow!(m))?
    } else {
        split(&keys, val_n, p.seed, p.shuffle)
    };

    let packing = p.packing || p.neat_packing;
    let make = |idx: &[usize]| -> (SplitData, usize) {
        match p.stage {
            Stage::Pt => {
                let docs: Vec<&[u32]> = idx
                    .iter()
                    .map(|&i| match &kept_items[i].1 {
                        Outcome::Doc(ids) => ids.as_slice(),
                        _ => unreachable!("pt rows are documents"),
                    })
                    .collect();
                (
                    SplitData::Seqs(blocks(&docs, p.cutoff_len, p.neat_packing)),
                    idx.len(),
                )
            }
            Stage::Sft => {
                let seqs: Vec<&Encoded> = idx
                    .iter()
                    .map(|&i| match &kept_items[i].1 {
                        Outcome::Seq { seq, .. } => seq,
                        _ => unreachable!("sft rows are sequences"),
                    })
                    .collect();
                let mut table = Table::new(p.neat_packing);
                if packing {
                    let lengths: Vec<usize> = seqs.iter().map(|s| s.ids.len()).collect();
                    let mut bins = pack(&lengths, p.cutoff_len);
                    if p.shuffle {
                        let first: Vec<Key> = bins.iter().map(|b| keys[idx[b[0]]]).collect();
                        let order = hash_order(&first, p.seed, "lf-bins");
                        bins = order.into_iter().map(|i| bins[i].clone()).collect();
                    }
                    for bin in &bins {
                        let parts: Vec<&Encoded> = bin.iter().map(|&j| seqs[j]).collect();
                        table.push_row(&parts);
                    }
                } else {
                    for s in &seqs {
                        table.push_row(&[s]);
                    }
                }
                (SplitData::Seqs(table), idx.len())
            }
            Stage::Rm => {
                let mut c = Table::new(false);
                let mut r = Table::new(false);
                let mut margins = Vec::new();
                for &i in idx {
                    let Outcome::Pair {
                        chosen,
                        rejected,
                        margin,
                        ..
                    } = &kept_items[i].1
                    else {
                        unreachable!("rm rows are pairs")
                    };
                    c.push_row(&[chosen]);
                    r.push_row(&[rejected]);
                    margins.push(*margin);
                }
                // Margins are kept only when the data has them (`columns.margin`).
                let margins = margins
                    .iter()
                    .any(Option::is_some)
                    .then(|| margins.iter().map(|m| m.unwrap_or(0.0)).collect());
                (SplitData::Pairs(c, r, margins), idx.len())
            }
            Stage::Kto => {
                let mut completions = Table::new(false);
                let mut kl = Table::new(false);
                let mut desirable = Vec::with_capacity(idx.len());
                for &i in idx {
                    let Outcome::Feedback {
                        completion,
                        kl: kl_seq,
                        desirable: d,
                        ..
                    } = &kept_items[i].1
                    else {
                        unreachable!("kto rows are feedback")
                    };
                    completions.push_row(&[completion]);
                    kl.push_row(&[kl_seq]);
                    desirable.push(*d);
                }
                (
                    SplitData::Feedback {
                        completions,
                        kl,
                        desirable,
                    },
                    idx.len(),
                )
            }
        }
    };

    let mut splits = BTreeMap::new();
    for (name, idx) in [("train", &train_idx), ("val", &val_idx)] {
        if idx.is_empty() {
            continue;
        }
        let (data, samples) = make(idx);
        let file = format!("{name}.safetensors");
        write_split(&out.join(&file), &data)?;
        let info = SplitInfo {
            samples,
            ..data.info(file)
        };
        splits.insert(name.to_string(), info);
    }

    // The preview: the first training samples as the model sees them.
    let preview: Vec<Json> = train_idx
        .iter()
        .take(PREVIEW_ROWS)
        .map(|&i| preview_row(&tok, &kept_items[i].1))
        .collect();
    let mut text = String::new();
    for row in &preview {
        text.push_str(&serde_json::to_string(row)?);
        text.push('\n');
    }
    std::fs::write(out.join("preview.jsonl"), text)?;

    let info = DatasetInfo {
        tokenizer_fingerprint: tok.fingerprint()?,
        format: FORMAT.into(),
        version: VERSION,
        stage: p.stage,
        cutoff_len: p.cutoff_len,
        truncation: p.truncation,
        packing,
        neat_packing: p.neat_packing,
        train_on_prompt: p.train_on_prompt,
        mask_history: p.mask_history,
        tokenizer_origin: tok.origin.clone(),
        vocab_size: tok.vocab_size(),
        bos_id: tok.bos_id,
        eos_id: tok.eos_id,
        pad_id: tok.pad_id,
        bos_token: tok.tokens.bos.clone(),
        eos_token: tok.tokens.eos.clone(),
        pad_token: tok.tokens.pad.clone(),
        template: template.as_ref().map(|(t, name)| TemplateInfo {
            name: name.to_string(),
            hash: t.hash.clone(),
        }),
        splits,
        sources,
        rows,
        kept,
        dropped,
        truncated,
        prefix_mismatch: mismatch,
        searched_replies: searched,
        notes,
        seed: p.seed,
        shuffle: p.shuffle,
    };
    std::fs::write(
        out.join("info.json"),
        serde_json::to_string_pretty(&info)? + "\n",
    )?;
    Ok(info)
}

/// The chat template to render with, and its name.
fn choose_template(
    p: &DatasetParams,
    tok: &ModelTokenizer,
    notes: &mut Vec<String>,
) -> anyhow::Result<(ChatTemplate, &'static str)> {
    let compile = |source: &str| {
        ChatTemplate::new(source, &tok.tokens, &p.template_vars)
            .map_err(|e| anyhow::anyhow!("{}", e.display_debug_info()).context(e.to_string()))
    };
    if p.template == TemplateName::Auto {
        let source = tok.chat_template.as_deref().with_context(|| {
            format!(
                "the model has no chat template (`template: auto` uses the model's own)\nhint: set `template` to a built-in one: {}",
                list(TemplateName::BUILTIN.iter().map(|t| t.name()))
            )
        })?;
        return Ok((
            compile(source).context("cannot compile the model's chat template")?,
            "auto",
        ));
    }
    let b = builtin(p.template).expect("every name but auto is built in");
    if tok.chat_template.is_some() {
        let note = format!(
            "the model has its own chat template, but the data is rendered with `{}`: the model will be tuned to a format it was not trained on (`template: auto` uses its own)",
            b.name.name()
        );
        warn!("{note}");
        notes.push(note);
    }
    let missing: Vec<&str> = b
        .specials
        .iter()
        .copied()
        .filter(|s| tok.tokenizer.token_to_id(s).is_none())
        .collect();
    if !missing.is_empty() {
        let note = format!(
            "the tokenizer has no token {}: the `{}` template's markers will be split into ordinary tokens",
            list(&missing),
            b.name.name()
        );
        warn!("{note}");
        notes.push(note);
    }
    Ok((compile(b.source)?, b.name.name()))
}

/// Reads, converts and checks one dataset.
fn load_dataset(
    stage: Stage,
    d: &DatasetSource,
    input: Option<&Path>,
) -> anyhow::Result<(Vec<Item>, SourceInfo)> {
    let (files, format, columns, tags, max) = match &d.dataset_info {
        Some(entry) => {
            let input = input.context("`dataset_info` needs a folder as `source`")?;
            let (root, json) = if input.is_file() {
                (
                    input.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    input.to_path_buf(),
                )
            } else {
                (input.to_path_buf(), input.join("dataset_info.json"))
            };
            let label = if input.is_file() {
                d.source.clone()
            } else {
                format!("{}/dataset_info.json", d.source.trim_end_matches('/'))
            };
            let e = dataset_info_entry(&json, &label, entry)?;
            let base = label
                .rsplit_once('/')
                .map(|(dir, _)| dir.to_string())
                .unwrap_or_default();
            let source = if base.is_empty() {
                e.file_name.clone()
            } else {
                format!("{base}/{}", e.file_name)
            };
            let files = find(&source, Some(&root.join(&e.file_name)), None, Several::All)?;
            (
                files,
                e.format,
                e.columns,
                e.tags,
                d.max_samples.or(e.num_samples),
            )
        }
        None => (
            find(&d.source, input, d.file.as_deref(), Several::Error)?,
            d.format,
            d.columns.clone(),
            d.tags.clone(),
            d.max_samples,
        ),
    };
    let mut rows: Vec<Row> = Vec::new();
    for f in &files {
        if max.is_some_and(|m| rows.len() >= m) {
            break;
        }
        // A text file a `dataset_info.json` names is read as LLaMA-Factory reads it: a row per line.
        if d.dataset_info.is_some() && f.kind == FileKind::Text {
            rows.extend(read_text_lines(f)?);
        } else {
            rows.extend(read_rows(f)?);
        }
    }
    if let Some(m) = max {
        rows.truncate(m);
    }
    if let Some(col) = &columns.kto_tag
        && stage != Stage::Kto
    {
        anyhow::bail!(
            "the rows mark their replies desirable or not (`columns.kto_tag: {col}`), but stage `{}` would train on every reply\nhint: set `stage: kto` and train it with a `kto` step",
            stage.name()
        );
    }
    let layout = resolve(format, &columns, &tags, rows.first())?;
    let converted: Vec<Result<Vec<Item>, DataError>> = rows
        .par_iter()
        .map(|row| {
            let bytes = serde_json::to_vec(&row.value).expect("JSON values serialize");
            let samples = stage_samples(stage, &layout, row)?;
            Ok(samples
                .into_iter()
                // The two halves of an unpaired preference row share the row's group, which keeps
                // them in one split (`split_grouped`); each has a key of its own for the shuffle.
                .enumerate()
                .map(|(j, sample)| Item {
                    key: if j == 0 {
                        key_of(&bytes)
                    } else {
                        key_of(&[bytes.as_slice(), format!("\0{j}").as_bytes()].concat())
                    },
                    group: key_of(&bytes),
                    sample,
                    origin: row.origin.clone(),
                })
                .collect())
        })
        .collect();
    let items: Vec<Item> = converted
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let info = SourceInfo {
        source: d.source.clone(),
        files: files.iter().map(|f| f.label.to_string()).collect(),
        format: format_name(&layout),
        rows: items.len(),
    };
    Ok((items, info))
}

/// Whether a sample's text still has a `{{ … }}` placeholder.
fn has_placeholder(sample: &Sample) -> bool {
    let text = |t: &str| t.contains("{{") && t.contains("}}");
    match sample {
        Sample::Chat(c) => c.messages.iter().any(|m| text(&m.content)),
        Sample::Pair {
            prompt,
            chosen,
            rejected,
            ..
        } => {
            prompt.messages.iter().any(|m| text(&m.content))
                || text(&chosen.content)
                || text(&rejected.content)
        }
        Sample::Feedback { conv, .. } => conv.messages.iter().any(|m| text(&m.content)),
        Sample::Text(t) => text(t),
    }
}

/// Gives each KTO row the reply of another row, for the KL estimate: the row half the data further
/// on (wrapping around), or the first of the next [`KL_SEARCH`] after it whose prompt differs, so
/// that the two halves of an unpaired preference row never meet. Returns a note when some row could
/// only get a reply to its own prompt (one row, or one prompt throughout).
fn pair_kl_replies(items: &mut [Item]) -> Option<String> {
    let n = items.len();
    // Each row's prompt and reply; none for a row without a usable reply (the encoder drops it, and
    // it must not take a good row down with it).
    let parts: Vec<Option<(&[Message], &Message)>> = items
        .iter()
        .map(|it| match &it.sample {
            Sample::Feedback { conv, .. } => conv
                .messages
                .split_last()
                .filter(|(last, _)| {
                    last.role == Role::Assistant
                        && (!last.content.trim().is_empty() || last.tool_calls.is_some())
                })
                .map(|(last, prompt)| (prompt, last)),
            _ => None,
        })
        .collect();
    let mut own = 0;
    let mut partners = Vec::with_capacity(n);
    for i in 0..n {
        let Some((prompt, _)) = parts[i] else {
            partners.push(None);
            continue;
        };
        let start = i + n / 2;
        let candidates = || (0..n.min(KL_SEARCH)).map(|k| (start + k) % n);
        let found = candidates().find(|&j| j != i && parts[j].is_some_and(|(p, _)| p != prompt));
        let j = found.unwrap_or_else(|| {
            own += 1;
            candidates().find(|&j| parts[j].is_some()).unwrap_or(i)
        });
        partners.push(parts[j].map(|(_, reply)| reply.clone()));
    }
    for (it, partner) in items.iter_mut().zip(partners) {
        if let Sample::Feedback { kl_reply, .. } = &mut it.sample {
            *kl_reply = partner;
        }
    }
    (own > 0).then(|| {
        format!(
            "{own} rows have no row with another prompt to pair with, so their KL estimate uses a reply to their own prompt (KTO needs rows with different prompts)"
        )
    })
}

fn format_name(layout: &Layout) -> String {
    match layout.format {
        Format::Auto => "auto",
        Format::Alpaca => "alpaca",
        Format::Sharegpt => "sharegpt",
        Format::Openai => "openai",
        Format::Preference if layout.pair_messages => "preference (messages)",
        Format::Preference => "preference (alpaca)",
        Format::Text => "text",
    }
    .to_string()
}

/// Converts a row into the kind of samples `stage` needs (one, or two for a preference row unpaired
/// for KTO), or says why it cannot.
fn stage_samples(stage: Stage, layout: &Layout, row: &Row) -> Result<Vec<Sample>, DataError> {
    if stage == Stage::Pt
        && let Some(text) = layout.pretraining_text(row)?
    {
        return Ok(vec![Sample::Text(text)]);
    }
    let samples = if stage == Stage::Kto {
        layout.feedback(row)?
    } else {
        vec![layout.convert(row)?]
    };
    let first = &samples[0];
    let (need, hint) = match (stage, first) {
        (Stage::Kto, Sample::Feedback { .. })
        | (Stage::Pt, Sample::Text(_))
        | (Stage::Sft, Sample::Chat(_))
        | (Stage::Rm, Sample::Pair { .. }) => return Ok(samples),
        (Stage::Sft, Sample::Pair { .. }) => (
            "conversations",
            "use `stage: rm` for preference pairs, or `format: alpaca` with `columns: {response: chosen}` to fine-tune on the chosen replies",
        ),
        (Stage::Sft, _) => ("conversations", "use `stage: pt` for plain text"),
        (Stage::Pt, _) => (
            "plain text",
            "use `format: text` and name the text column with `columns: {text: ...}`",
        ),
        (Stage::Rm, _) => (
            "preference pairs",
            "rows need `chosen` and `rejected` replies (`format: preference`)",
        ),
        (Stage::Kto, _) => (
            "conversations with a `kto_tag`, or preference pairs",
            "use conversations (alpaca, sharegpt or openai) whose last message is the reply",
        ),
    };
    Err(DataError::row_hint(
        &row.origin,
        format!(
            "holds {}, but stage `{}` needs {need}",
            first.kind(),
            stage.name()
        ),
        hint,
    ))
}

/// Combines the datasets as `mix` says.
fn mix(p: &DatasetParams, mut per_dataset: Vec<Vec<Item>>) -> Vec<Item> {
    if p.mix == Mix::Concat || per_dataset.len() == 1 {
        return per_dataset.into_iter().flatten().collect();
    }
    let weights: Vec<f64> = p
        .datasets
        .iter()
        .map(|d| d.probability.unwrap_or(1.0))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed);
    let mut cursor = vec![0usize; per_dataset.len()];
    let mut exhausted = vec![false; per_dataset.len()];
    let mut out = Vec::new();
    // Empty datasets count as used up; they can never be drawn from.
    for (i, d) in per_dataset.iter().enumerate() {
        exhausted[i] = d.is_empty() || weights[i] <= 0.0;
    }
    let live: f64 = weights
        .iter()
        .zip(&per_dataset)
        .filter(|(_, d)| !d.is_empty())
        .map(|(w, _)| w)
        .sum();
    if live <= 0.0 {
        return Vec::new();
    }
    loop {
        let mut x = rng.random::<f64>() * total;
        let mut pick = weights.len() - 1;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                pick = i;
                break;
            }
            x -= w;
        }
        let d = &mut per_dataset[pick];
        if d.is_empty() || weights[pick] <= 0.0 {
            continue;
        }
        let i = cursor[pick];
        out.push(Item {
            key: d[i].key,
            group: d[i].group,
            sample: d[i].sample.clone(),
            origin: d[i].origin.clone(),
        });
        cursor[pick] += 1;
        if cursor[pick] == d.len() {
            exhausted[pick] = true;
            cursor[pick] = 0;
            if p.mix == Mix::Interleave || exhausted.iter().all(|&e| e) {
                break;
            }
        }
    }
    for d in &mut per_dataset {
        d.clear();
    }
    out
}

/// How many dropped rows a note names; `dropped.jsonl` in the artifact lists them all.
const SHOWN_DROPPED: usize = 3;

/// A source's files for a message: `a.jsonl`, or `a.jsonl, b.jsonl`, or `a.jsonl and 4 more`.
fn describe_files(files: &[String]) -> String {
    match files {
        [] => "no files".to_string(),
        [one] => format!("`{one}`"),
        [a, b] => format!("`{a}`, `{b}`"),
        [a, rest @ ..] => format!("`{a}` and {} more", rest.len()),
    }
}

fn describe_dropped(dropped: &BTreeMap<String, usize>) -> String {
    dropped
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn hint_for(dropped: &BTreeMap<String, usize>, details: &BTreeMap<Dropped, String>) -> String {
    let mut hints = Vec::new();
    if dropped.contains_key("too_long") {
        hints.push("raise `cutoff_len`, or set `truncation: cut`".to_string());
    }
    for (why, detail) in details {
        hints.push(format!("{}: {detail}", why.name()));
    }
    if dropped.contains_key("no_reply") {
        hints.push("conversations must end with an assistant reply".to_string());
    }
    if hints.is_empty() {
        String::new()
    } else {
        format!("\nhint: {}", hints.join("; "))
    }
}

/// A preview row: rendered text, and the tokens in runs marked trained or not.
fn preview_row(tok: &ModelTokenizer, o: &Outcome) -> Json {
    let runs = |seq: &Encoded| -> Json {
        let mut out = Vec::new();
        let mut start = 0;
        for i in 1..=seq.ids.len() {
            let boundary =
                i == seq.ids.len() || (seq.labels[i] == IGNORE) != (seq.labels[start] == IGNORE);
            if boundary {
                let text = tok
                    .tokenizer
                    .decode(&seq.ids[start..i], false)
                    .unwrap_or_default();
                out.push(json!([text, seq.labels[start] != IGNORE]));
                start = i;
            }
        }
        json!({"tokens": seq.ids.len(), "trained": seq.trained(), "runs": out})
    };
    match o {
        Outcome::Seq { seq, text, .. } => json!({"text": text, "sequence": runs(seq)}),
        Outcome::Pair {
            chosen,
            rejected,
            texts,
            ..
        } => json!({
            "chosen": {"text": texts.0, "sequence": runs(chosen)},
            "rejected": {"text": texts.1, "sequence": runs(rejected)},
        }),
        Outcome::Feedback {
            completion,
            kl,
            texts,
            desirable,
            ..
        } => json!({
            "desirable": desirable,
            "text": texts.0,
            "sequence": runs(completion),
            "kl": {"text": texts.1, "sequence": runs(kl)},
        }),
        Outcome::Doc(ids) => {
            let seq = Encoded {
                ids: ids.clone(),
                labels: ids.iter().map(|&i| i as i32).collect(),
            };
            json!({"text": tok.tokenizer.decode(ids, false).unwrap_or_default(), "sequence": runs(&seq)})
        }
        Outcome::Dropped(..) => Json::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::artifact::{Example, Split, TokenizedDataset, collate};
    use crate::data::tokenizer::tests::smollm2_dir;
    use serde_json::json;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/data")
    }

    /// Parameters from JSON; sources that are not built-in are relative to the fixtures folder.
    fn setup(mut params: Json) -> (DatasetParams, Inputs) {
        if params.get("model").is_none() {
            params["model"] = json!("model");
        }
        let p: DatasetParams = serde_json::from_value(params).unwrap();
        let sources = p
            .datasets
            .iter()
            .map(|d| {
                (!crate::data::builtin::is_builtin(&d.source)).then(|| fixtures().join(&d.source))
            })
            .collect();
        (
            p,
            Inputs {
                model: smollm2_dir(),
                sources,
            },
        )
    }

    fn run(params: Json) -> (tempfile::TempDir, DatasetInfo) {
        let (p, inputs) = setup(params);
        let out = tempfile::tempdir().unwrap();
        let info = build(&p, &inputs, out.path(), &Progress::new(false)).unwrap();
        (out, info)
    }

    fn fails(params: Json) -> String {
        let (p, inputs) = setup(params);
        let out = tempfile::tempdir().unwrap();
        format!(
            "{:#}",
            build(&p, &inputs, out.path(), &Progress::new(false)).unwrap_err()
        )
    }

    fn sft_mix() -> Json {
        json!({
            "datasets": [
                {"source": "chat_sharegpt.json"},
                {"source": "alpaca.csv", "format": "alpaca",
                 "columns": {"prompt": "question", "query": "context", "response": "answer"}},
                {"source": "chat_openai.jsonl"},
            ],
            "val_size": 2,
        })
    }

    #[test]
    fn sft_artifact_counts_drops_and_reads_back() {
        let (out, info) = run(sft_mix());
        assert_eq!(info.rows, 12);
        assert_eq!(info.dropped, BTreeMap::from([("no_reply".to_string(), 1)]));
        assert_eq!(info.kept, 11);
        assert_eq!(info.splits["train"].rows, 9);
        assert_eq!(info.splits["val"].rows, 2);
        assert_eq!(info.template.as_ref().unwrap().name, "auto");
        assert_eq!(info.eos_id, Some(2));
        assert_eq!(
            info.tokenizer_fingerprint,
            crate::data::tokenizer_fingerprint(&smollm2_dir()).unwrap()
        );
        assert_eq!(info.sources[1].format, "alpaca");
        assert_eq!(info.sources[2].format, "openai");
        let train = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        train.check_tokenizer(&smollm2_dir()).unwrap();
        assert_eq!(train.len(), 9);
        let mut trained = 0;
        for i in 0..train.len() {
            let Example::Single(s) = train.example(i) else {
                panic!()
            };
            assert_eq!(s.position_ids, (0..s.len() as u32).collect::<Vec<_>>());
            assert!(s.segment_ids.iter().all(|&x| x == 1));
            // The first token is a prompt token; replies end with <|im_end|>, trained.
            assert_eq!(s.labels[0], IGNORE);
            assert!(s.labels.contains(&2));
            trained += s.labels.iter().filter(|&&l| l != IGNORE).count();
        }
        assert_eq!(trained, info.splits["train"].trained_tokens);
        let val = TokenizedDataset::open(out.path(), Split::Val).unwrap();
        assert_eq!(val.len(), 2);
        let batch = collate(&[train.example(0), train.example(1)], info.pad_id);
        assert_eq!(batch.shape[0], 2);
        let preview = std::fs::read_to_string(out.path().join("preview.jsonl")).unwrap();
        assert_eq!(preview.lines().count(), 9);
        let first: Json = serde_json::from_str(preview.lines().next().unwrap()).unwrap();
        assert!(
            first["text"]
                .as_str()
                .unwrap()
                .contains("<|im_start|>assistant\n")
        );
    }

    #[test]
    fn artifacts_are_byte_identical_when_rebuilt() {
        let (a, _) = run(sft_mix());
        let (b, _) = run(sft_mix());
        for f in [
            "info.json",
            "train.safetensors",
            "val.safetensors",
            "preview.jsonl",
        ] {
            assert_eq!(
                std::fs::read(a.path().join(f)).unwrap(),
                std::fs::read(b.path().join(f)).unwrap(),
                "{f}"
            );
        }
        // Another seed moves rows between the splits.
        let mut other = sft_mix();
        other["seed"] = json!(7);
        let (c, _) = run(other);
        assert_ne!(
            std::fs::read(a.path().join("val.safetensors")).unwrap(),
            std::fs::read(c.path().join("val.safetensors")).unwrap()
        );
    }

    #[test]
    fn packing_fills_rows_and_neat_packing_restarts_positions() {
        let mut params = sft_mix();
        params["val_size"] = json!(0);
        params["cutoff_len"] = json!(256);
        params["packing"] = json!(true);
        let (_, plain) = run(params.clone());
        let train = &plain.splits["train"];
        assert_eq!(train.samples, 11);
        assert!(train.rows < 11 && train.rows >= 2, "{train:?}");
        assert!(train.longest <= 256);
        params["neat_packing"] = json!(true);
        let (out, neat) = run(params);
        assert!(neat.neat_packing);
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        let mut samples = 0;
        for i in 0..ds.len() {
            let Example::Single(s) = ds.example(i) else {
                panic!()
            };
            samples += *s.segment_ids.last().unwrap() as usize;
            for t in 1..s.len() {
                if s.segment_ids[t] != s.segment_ids[t - 1] {
                    assert_eq!(s.segment_ids[t], s.segment_ids[t - 1] + 1);
                    assert_eq!(s.position_ids[t], 0);
                    assert_eq!(s.labels[t], IGNORE);
                } else {
                    assert_eq!(s.position_ids[t], s.position_ids[t - 1] + 1);
                }
            }
        }
        assert_eq!(samples, 11);
    }

    #[test]
    fn preference_pairs_from_sharegpt_and_dataset_info() {
        let (out, info) = run(json!({
            "stage": "rm",
            "datasets": [
                {"source": "pref_sharegpt.json"},
                {"source": "lf_data", "dataset_info": "pref_demo"},
            ],
        }));
        assert_eq!(info.kept, 5);
        assert_eq!(info.sources[0].format, "preference (messages)");
        assert_eq!(info.sources[1].format, "preference (alpaca)");
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        let Example::Pair { chosen, rejected } = ds.example(0) else {
            panic!()
        };
        let shared = chosen.labels.iter().take_while(|&&l| l == IGNORE).count();
        assert_eq!(chosen.input_ids[..shared], rejected.input_ids[..shared]);
        assert_ne!(chosen.input_ids, rejected.input_ids);
        assert_eq!(collate(&[ds.example(0)], info.pad_id).shape[0], 2);
    }

    #[test]
    fn dataset_info_entries_are_used_as_written() {
        let (_, info) = run(json!({
            "datasets": [
                {"source": "lf_data", "dataset_info": "qa_demo"},
                {"source": "lf_data/dataset_info.json", "dataset_info": "chat_demo"},
            ],
        }));
        assert_eq!(info.kept, 4);
        assert_eq!(info.sources[0].files, vec!["lf_data/qa.json"]);
        assert_eq!(info.sources[1].format, "sharegpt");
        let e = fails(json!({"datasets": [{"source": "lf_data", "dataset_info": "hub_demo"}]}));
        assert!(e.contains("is remote (`hf_hub_url`)"), "{e}");
        let e = fails(json!({"datasets": [{"source": "lf_data", "dataset_info": "kto_demo"}]}));
        assert!(
            e.contains("mark their replies desirable or not") && e.contains("set `stage: kto`"),
            "{e}"
        );
    }

    /// The prompt of a `kto` sequence: its tokens before the first trained one.
    fn prompt_of(s: &crate::data::Sequence) -> Vec<u32> {
        let n = s.labels.iter().take_while(|&&l| l == IGNORE).count();
        s.input_ids[..n].to_vec()
    }

    #[test]
    fn kto_rows_keep_their_tag_and_a_reply_to_another_prompt() {
        // LLaMA-Factory's layout: sharegpt messages and a `kto_tag` column named `label`.
        let (out, info) = run(json!({
            "stage": "kto",
            "datasets": [{"source": "lf_data", "dataset_info": "kto_demo"}],
            "shuffle": false,
        }));
        assert_eq!(info.kept, 6);
        assert_eq!(info.stage, Stage::Kto);
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        let tags: Vec<bool> = (0..ds.len()).map(|i| ds.desirable(i).unwrap()).collect();
        assert_eq!(tags.iter().filter(|t| **t).count(), 4, "{tags:?}");
        for i in 0..ds.len() {
            let Example::Feedback { completion, kl } = ds.example(i) else {
                panic!()
            };
            // The KL sequence: the same prompt, another prompt's reply, trained tokens only there.
            assert_eq!(prompt_of(&completion), prompt_of(&kl));
            assert_ne!(completion.input_ids, kl.input_ids);
            assert!(kl.labels.iter().any(|&l| l != IGNORE));
        }
        let batch = collate(&[ds.example(0), ds.example(1)], info.pad_id);
        assert_eq!(batch.shape[0], 4, "completions, then KL sequences");
        // A tag that is not a boolean names its row.
        let e = fails(json!({
            "stage": "kto",
            "datasets": [{"source": "chat_openai.jsonl", "columns": {"kto_tag": "messages"}}],
        }));
        assert!(
            e.contains("`chat_openai.jsonl:1`: `messages` is an array, not true or false"),
            "{e}"
        );
        let e = fails(json!({"stage": "kto", "datasets": [{"source": "chat_openai.jsonl"}]}));
        assert!(e.contains("no column `kto_tag`"), "{e}");
    }

    /// A `kto` dataset of `rows` (JSON values) in a temporary file.
    fn kto_run(rows: &[Json]) -> Result<(tempfile::TempDir, DatasetInfo), String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rows.json");
        std::fs::write(&file, serde_json::to_string(rows).unwrap()).unwrap();
        let (p, inputs) = setup(json!({
            "stage": "kto",
            "datasets": [{"source": file.to_str().unwrap()}],
            "shuffle": false,
        }));
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        build(&p, &inputs, &out, &Progress::new(false))
            .map(|info| (dir, info))
            .map_err(|e| format!("{e:#}"))
    }

    fn kto_row(prompt: &str, reply: &str, tag: bool) -> Json {
        json!({"instruction": prompt, "output": reply, "kto_tag": tag})
    }

    #[test]
    fn kto_partners_skip_empty_replies_and_a_lone_prompt_is_noted() {
        // Row 4's reply is empty: it is dropped, and the row that would have taken it as its KL
        // reply takes the next one instead of being dropped too.
        let (_, info) = kto_run(&[
            kto_row("a?", "A.", true),
            kto_row("b?", "B.", false),
            kto_row("c?", "C.", true),
            kto_row("d?", " ", true),
        ])
        .unwrap();
        assert_eq!(info.kept, 3, "{:?}", info.dropped);
        assert!(
            info.notes.iter().all(|n| !n.contains("KL")),
            "{:?}",
            info.notes
        );
        // One prompt throughout: every KL reply answers the row's own prompt, and a note says so.
        let (_, info) = kto_run(&[kto_row("a?", "A.", true), kto_row("a?", "No.", false)]).unwrap();
        assert_eq!(info.kept, 2);
        assert!(
            info.notes
                .iter()
                .any(|n| n.starts_with("2 rows have no row with another prompt")),
            "{:?}",
            info.notes
        );
    }

    #[test]
    fn preference_pairs_are_unpaired_for_kto() {
        let (out, info) = run(json!({
            "stage": "kto",
            "datasets": [{"source": "pref_sharegpt.json"}],
            "shuffle": false,
        }));
        assert_eq!(info.kept, 6, "three pairs, six replies");
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        let mut desirable = 0;
        for i in 0..ds.len() {
            let Example::Feedback { completion, kl } = ds.example(i) else {
                panic!()
            };
            desirable += usize::from(ds.desirable(i).unwrap());
            // Never the other half of the same pair: the KL reply answers another prompt.
            let reply = |s: &crate::data::Sequence| -> Vec<u32> {
                s.input_ids[prompt_of(s).len()..].to_vec()
            };
            for j in 0..ds.len() {
                let Example::Feedback {
                    completion: other, ..
                } = ds.example(j)
                else {
                    panic!()
                };
                if reply(&other) == reply(&kl) {
                    assert_ne!(
                        prompt_of(&other),
                        prompt_of(&completion),
                        "rows {i} and {j}"
                    );
                }
            }
        }
        assert_eq!(desirable, 3);
        // The two halves of a pair stay in one split.
        let (out, info) = run(json!({
            "stage": "kto",
            "datasets": [{"source": "pref_sharegpt.json"}],
            "val_size": 1,
        }));
        assert_eq!(info.splits["val"].rows, 2, "{info:?}");
        let val = TokenizedDataset::open(out.path(), Split::Val).unwrap();
        let prompts: Vec<Vec<u32>> = (0..2)
            .map(|i| match val.example(i) {
                Example::Feedback { completion, .. } => prompt_of(&completion),
                _ => panic!(),
            })
            .collect();
        assert_eq!(prompts[0], prompts[1]);
        // A validation split that would take both halves of the only pairs fails, saying why.
        let e = fails(json!({
            "stage": "kto",
            "datasets": [{"source": "pref_sharegpt.json", "max_samples": 1}],
            "val_size": 1,
        }));
        assert!(e.contains("leaves none to train on"), "{e}");
        let preview = std::fs::read_to_string(out.path().join("preview.jsonl")).unwrap();
        let first: Json = serde_json::from_str(preview.lines().next().unwrap()).unwrap();
        assert!(first["desirable"].is_boolean() && first["kl"]["sequence"].is_object());
    }

    /// LLaMA-Factory's `wiki_demo`: a `.txt` file with `columns: {prompt: text}`, one example per line.
    #[test]
    fn text_files_of_dataset_info_have_a_row_per_line() {
        let (out, info) = run(json!({
            "stage": "pt",
            "datasets": [{"source": "lf_data", "dataset_info": "lines_demo"}],
            "cutoff_len": 64,
        }));
        assert_eq!(info.rows, 3, "blank lines are left out");
        assert_eq!(info.sources[0].files, vec!["lf_data/lines.txt"]);
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        let Example::Single(s) = ds.example(0) else {
            panic!()
        };
        // Three documents, each ended by EOS.
        let eos = info.eos_id.unwrap();
        assert_eq!(s.input_ids.iter().filter(|&&t| t == eos).count(), 3);
    }

    #[test]
    fn pretraining_cuts_documents_into_blocks() {
        let (out, info) = run(json!({
            "stage": "pt",
            "datasets": [{"source": "builtin:corpus"}],
            "cutoff_len": 128,
            "neat_packing": true,
        }));
        assert!(info.template.is_none());
        let train = &info.splits["train"];
        assert_eq!(train.samples, info.kept);
        assert!(info.kept > 500, "{}", info.kept);
        let ds = TokenizedDataset::open(out.path(), Split::Train).unwrap();
        for i in 0..ds.len() - 1 {
            assert_eq!(ds.row_len(i), 128);
        }
        let eos = info.eos_id.unwrap();
        let Example::Single(s) = ds.example(0) else {
            panic!()
        };
        // A document ends with EOS; the next one starts a new segment at position 0.
        let end = s.input_ids.iter().position(|&t| t == eos).unwrap();
        if end + 1 < s.len() {
            assert_eq!(s.segment_ids[end + 1], 2);
            assert_eq!(s.position_ids[end + 1], 0);
        }
    }

    #[test]
    fn interleaving_draws_until_the_first_runs_out() {
        let mut params = sft_mix();
        params["val_size"] = json!(0);
        params["mix"] = json!("interleave");
        params["datasets"][0]["probability"] = json!(0.5);
        let (_, info) = run(params.clone());
        assert!(info.rows < 12, "{}", info.rows);
        params["mix"] = json!("interleave_all");
        let (_, all) = run(params);
        assert!(all.rows >= 12, "{}", all.rows);
    }

    #[test]
    fn a_named_template_on_an_instruct_model_is_noted() {
        let mut params = sft_mix();
        params["template"] = json!("llama3");
        let (_, info) = run(params);
        assert_eq!(info.template.as_ref().unwrap().name, "llama3");
        assert!(
            info.notes
                .iter()
                .any(|n| n.contains("has its own chat template")),
            "{:?}",
            info.notes
        );
        assert!(
            info.notes.iter().any(|n| n.contains("`<|eot_id|>`")),
            "{:?}",
            info.notes
        );
    }

    #[test]
    fn bad_input_is_reported_with_its_place() {
        let e = fails(json!({"datasets": [{"source": "bad_row.jsonl"}]}));
        assert!(e.contains("`bad_row.jsonl:3`: invalid JSON"), "{e}");
        let e = fails(json!({"datasets": [{"source": "alpaca.csv"}]}));
        assert!(
            e.contains("`alpaca.csv:2`: cannot tell the format from the columns `answer`, `context` and `question`"),
            "{e}"
        );
        let e = fails(json!({"datasets": [{"source": "alpaca.csv", "format": "alpaca"}]}));
        assert!(
            e.contains(
                "no column `instruction`\nhint: its columns are `answer`, `context` and `question`"
            ),
            "{e}"
        );
        let e = fails(json!({"datasets": [{"source": "pref_sharegpt.json"}]}));
        assert!(
            e.contains("`pref_sharegpt.json` row 1: holds preference pairs, but stage `sft` needs conversations"),
            "{e}"
        );
        let e = fails(json!({"datasets": [{"source": "chat_sharegpt.json"}], "cutoff_len": 8}));
        assert!(
            e.contains("no usable rows: all 6 were dropped (no_reply 1, too_long 5)"),
            "{e}"
        );
        assert!(e.contains("hint: raise `cutoff_len`"), "{e}");
        let e = fails(json!({"datasets": [{"source": "chat_sharegpt.json"}], "val_size": 5}));
        assert!(e.contains("leaving none to train on"), "{e}");
    }

    #[test]
    fn cut_rows_are_counted() {
        let (_, info) = run(json!({
            "datasets": [{"source": "chat_sharegpt.json"}],
            "cutoff_len": 40,
            "truncation": "cut",
        }));
        assert!(info.truncated > 0);
        assert!(info.splits["train"].longest <= 40);
    }
}
