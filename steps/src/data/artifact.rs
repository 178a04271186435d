//! The artifact of a `dataset` step, the contract between data preparation and training: writing it,
//! and reading it back as [`Example`]s and padded [`Batch`]es.
//!
//! ```text
//! info.json           DatasetInfo: stage, settings, special token ids, template, tokenizer
//!                     fingerprint, counts (rows, tokens, dropped by reason)
//! train.safetensors   the training split
//! val.safetensors     the validation split (only when val_size > 0)
//! preview.jsonl       the first training samples, rendered and decoded, for `lf preview`
//! ```
//!
//! A split of a `pt` or `sft` dataset holds `input_ids` (u32), `labels` (i32, `-100` = not trained)
//! and `offsets` (u64, rows + 1: row `i` is `[offsets[i], offsets[i+1])`), plus `position_ids` and
//! `segment_ids` (u32) when `neat_packing` is on. A split of an `rm` dataset holds the same three
//! arrays twice, prefixed `chosen_` and `rejected_`; row `i` of each is one pair; and `margin` (f32, one
//! per pair) when the data has a margin column.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use lf_schemas::kinds::dataset::{Stage, Truncation};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use super::encode::IGNORE;
use super::pack::Table;

/// The `format` value of `info.json`.
pub const FORMAT: &str = "lf-dataset";
/// The version of the artifact layout; readers refuse others.
pub const VERSION: u32 = 1;

/// `info.json`: what a dataset artifact holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    /// Always `lf-dataset`.
    pub format: String,
    /// The layout version ([`VERSION`]).
    pub version: u32,
    /// `pt`, `sft` or `rm`.
    pub stage: Stage,
    /// The longest row in tokens.
    pub cutoff_len: usize,
    /// `drop` or `cut`.
    pub truncation: Truncation,
    /// Rows hold several samples.
    pub packing: bool,
    /// Packed samples do not attend to each other: rows carry `position_ids` and `segment_ids`.
    pub neat_packing: bool,
    /// Prompts were trained too.
    pub train_on_prompt: bool,
    /// Only the last reply of each conversation was trained.
    pub mask_history: bool,
    /// blake3 of the tokenizer's canonical JSON ([`super::tokenizer_fingerprint`]).
    pub tokenizer_fingerprint: String,
    /// Where the tokenizer came from (`tokenizer.json` or a `.gguf` file name).
    pub tokenizer_origin: String,
    /// The vocabulary size, added tokens included.
    pub vocab_size: usize,
    /// BOS id, if the tokenizer has one.
    pub bos_id: Option<u32>,
    /// EOS id, if the tokenizer has one.
    pub eos_id: Option<u32>,
    /// The id to pad with.
    pub pad_id: u32,
    /// BOS text.
    pub bos_token: Option<String>,
    /// EOS text.
    pub eos_token: Option<String>,
    /// PAD text.
    pub pad_token: Option<String>,
    /// The chat template (none for `pt`).
    pub template: Option<TemplateInfo>,
    /// `train` and, if any, `val`.
    pub splits: BTreeMap<String, SplitInfo>,
    /// Each dataset, in order.
    pub sources: Vec<SourceInfo>,
    /// Rows read from all sources (after `max_samples` and mixing).
    pub rows: usize,
    /// Rows kept (encoded, within `cutoff_len`).
    pub kept: usize,
    /// Rows left out, by reason (`empty`, `no_reply`, `template_error`, `unmaskable`, `too_long`).
    pub dropped: BTreeMap<String, usize>,
    /// Rows cut to `cutoff_len` (`truncation: cut`).
    pub truncated: usize,
    /// Rows whose prompt, tokenized alone, is not a prefix of the row's tokens (a token spans the
    /// prompt/reply boundary; it is left untrained).
    pub prefix_mismatch: usize,
    /// Rows with a reply found by its end-of-turn token (the template renders history differently).
    pub searched_replies: usize,
    /// Warnings worth keeping (e.g. an instruct model trained with another template).
    pub notes: Vec<String>,
    /// The seed of the split and shuffle.
    pub seed: u64,
    /// Whether training rows were shuffled.
    pub shuffle: bool,
}

impl DatasetInfo {
    /// Rows dropped in all.
    pub fn dropped_total(&self) -> usize {
        self.dropped.values().sum()
    }
}

/// The chat template a dataset was rendered with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemplateInfo {
    /// `auto` (the model's own) or a built-in name.
    pub name: String,
    /// blake3 of the template text.
    pub hash: String,
}

/// Counts of one split.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Its file.
    pub file: String,
    /// Rows (sequences; pairs for `rm`).
    pub rows: usize,
    /// Samples in them (more than `rows` when packed).
    pub samples: usize,
    /// Tokens in all rows (both sides of pairs).
    pub tokens: usize,
    /// Trained tokens.
    pub trained_tokens: usize,
    /// The longest row.
    pub longest: usize,
}

/// One dataset of the step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `source` as written.
    pub source: String,
    /// The files read.
    pub files: Vec<String>,
    /// The format used.
    pub format: String,
    /// Rows used (after `max_samples`).
    pub rows: usize,
}

/// Which split to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// `train.safetensors`.
    Train,
    /// `val.safetensors`.
    Val,
}

impl Split {
    /// `train` or `val`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }

    /// Its file name.
    pub fn file(self) -> String {
        format!("{}.safetensors", self.name())
    }
}

/// The rows of one split, as written.
#[derive(Debug, Clone, PartialEq)]
pub enum SplitData {
    /// `pt` and `sft`.
    Seqs(Table),
    /// `rm`: chosen and rejected, row for row, and each pair's margin when the data has them.
    Pairs(Table, Table, Option<Vec<f32>>),
    /// `kto`: each row's conversation with its reply, its prompt with another row's reply (for the KL
    /// estimate), row for row, and whether each reply is desirable.
    Feedback {
        /// The conversations with their own replies.
        completions: Table,
        /// The prompts with mismatched replies.
        kl: Table,
        /// Whether each row's reply is desirable.
        desirable: Vec<bool>,
    },
}

impl SplitData {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        match self {
            SplitData::Seqs(t)
            | SplitData::Pairs(t, _, _)
            | SplitData::Feedback { completions: t, .. } => t.rows(),
        }
    }

    /// Its counts (`samples` is filled by the caller).
    pub fn info(&self, file: String) -> SplitInfo {
        let tables: Vec<&Table> = match self {
            SplitData::Seqs(t) => vec![t],
            SplitData::Pairs(c, r, _) => vec![c, r],
            SplitData::Feedback {
                completions, kl, ..
            } => vec![completions, kl],
        };
        SplitInfo {
            file,
            rows: self.rows(),
            samples: self.rows(),
            tokens: tables.iter().map(|t| t.ids.len()).sum(),
            // A KTO row's KL sequence is scored without gradients, never trained.
            trained_tokens: tables
                .iter()
                .take(if matches!(self, SplitData::Feedback { .. }) {
                    1
                } else {
                    tables.len()
                })
                .map(|t| t.labels.iter().filter(|&&l| l != IGNORE).count())
                .sum(),
            longest: tables
                .iter()
                .flat_map(|t| t.offsets.windows(2).map(|w| (w[1] - w[0]) as usize))
                .max()
                .unwrap_or(0),
        }
    }
}

fn bytes_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_u64(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a split to `path` (safetensors).
pub fn write_split(path: &Path, data: &SplitData) -> anyhow::Result<()> {
    let mut buffers: Vec<(String, Dtype, Vec<u8>, usize)> = Vec::new();
    let mut add = |prefix: &str, t: &Table| {
        buffers.push((
            format!("{prefix}input_ids"),
            Dtype::U32,
            bytes_u32(&t.ids),
            t.ids.len(),
        ));
        buffers.push((
            format!("{prefix}labels"),
            Dtype::I32,
            bytes_i32(&t.labels),
            t.labels.len(),
        ));
        buffers.push((
            format!("{prefix}offsets"),
            Dtype::U64,
            bytes_u64(&t.offsets),
            t.offsets.len(),
        ));
        if let (Some(p), Some(s)) = (&t.positions, &t.segments) {
            buffers.push((
                format!("{prefix}position_ids"),
                Dtype::U32,
                bytes_u32(p),
                p.len(),
            ));
            buffers.push((
                format!("{prefix}segment_ids"),
                Dtype::U32,
                bytes_u32(s),
                s.len(),
            ));
        }
    };
    match data {
        SplitData::Seqs(t) => add("", t),
        SplitData::Pairs(c, r, margins) => {
            add("chosen_", c);
            add("rejected_", r);
            if let Some(m) = margins {
                let bytes = m.iter().flat_map(|x| x.to_le_bytes()).collect();
                buffers.push(("margin".into(), Dtype::F32, bytes, m.len()));
            }
        }
        SplitData::Feedback {
            completions,
            kl,
            desirable,
        } => {
            add("completion_", completions);
            add("kl_", kl);
            let bytes = desirable.iter().map(|&d| u8::from(d)).collect();
            buffers.push(("desirable".into(), Dtype::U8, bytes, desirable.len()));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = buffers
        .iter()
        .map(|(name, dtype, bytes, len)| {
            TensorView::new(*dtype, vec![*len], bytes).map(|v| (name.clone(), v))
        })
        .collect::<Result<_, _>>()?;
    // One metadata entry only: the header must be byte-identical run to run.
    let meta = HashMap::from([("format".to_string(), format!("{FORMAT}-v{VERSION}"))]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .with_context(|| format!("cannot write `{}`", path.display()))
}

fn read_table(st: &SafeTensors<'_>, prefix: &str, path: &Path) -> anyhow::Result<Table> {
    let get = |name: &str, dtype: Dtype| -> anyhow::Result<Option<Vec<u8>>> {
        let full = format!("{prefix}{name}");
        match st.tensor(&full) {
            Ok(t) => {
                anyhow::ensure!(
                    t.dtype() == dtype,
                    "`{}`: `{full}` is {:?}, expected {dtype:?}",
                    path.display(),
                    t.dtype()
                );
                Ok(Some(t.data().to_vec()))
            }
            Err(_) => Ok(None),
        }
    };
    let need = |name: &str, dtype| {
        get(name, dtype)?.with_context(|| format!("`{}` has no `{prefix}{name}`", path.display()))
    };
    let u32s = |b: Vec<u8>| -> Vec<u32> {
        b.chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let table = Table {
        ids: u32s(need("input_ids", Dtype::U32)?),
        labels: need("labels", Dtype::I32)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        offsets: need("offsets", Dtype::U64)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        positions: get("position_ids", Dtype::U32)?.map(u32s),
        segments: get("segment_ids", Dtype::U32)?.map(u32s),
    };
    let n = table.ids.len() as u64;
    anyhow::ensure!(
        table.labels.len() as u64 == n
            && !table.offsets.is_empty()
            && table.offsets[0] == 0
            && *table.offsets.last().unwrap() == n
            && table.offsets.windows(2).all(|w| w[0] <= w[1])
            && table.positions.as_ref().is_none_or(|p| p.len() as u64 == n)
            && table.segments.as_ref().is_none_or(|s| s.len() as u64 == n),
        "`{}` is inconsistent (lengths or offsets of `{prefix}*` do not agree)",
        path.display()
    );
    Ok(table)
}

/// Reads a split written by [`write_split`].
pub fn read_split(path: &Path, stage: Stage) -> anyhow::Result<SplitData> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("`{}` is not a safetensors file", path.display()))?;
    Ok(match stage {
        Stage::Rm => {
            let c = read_table(&st, "chosen_", path)?;
            let r = read_table(&st, "rejected_", path)?;
            let margins = match st.tensor("margin") {
                Err(_) => None,
                Ok(t) => {
                    anyhow::ensure!(
                        t.dtype() == Dtype::F32 && t.shape() == [c.rows()] && r.rows() == c.rows(),
                        "`{}`: `margin` does not hold one f32 per pair",
                        path.display()
                    );
                    Some(
                        t.data()
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                            .collect(),
                    )
                }
            };
            SplitData::Pairs(c, r, margins)
        }
        Stage::Kto => {
            let completions = read_table(&st, "completion_", path)?;
            let kl = read_table(&st, "kl_", path)?;
            let t = st
                .tensor("desirable")
                .with_context(|| format!("`{}` has no `desirable`", path.display()))?;
            anyhow::ensure!(
                t.dtype() == Dtype::U8
                    && t.shape() == [completions.rows()]
                    && kl.rows() == completions.rows(),
                "`{}`: `desirable` does not hold one u8 per row",
                path.display()
            );
            SplitData::Feedback {
                completions,
                kl,
                desirable: t.data().iter().map(|&b| b != 0).collect(),
            }
        }
        Stage::Pt | Stage::Sft => SplitData::Seqs(read_table(&st, "", path)?),
    })
}

/// One training sequence.
///
/// # Shapes
/// All four vectors have the sequence's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Token ids.
    pub input_ids: Vec<u32>,
    /// `input_ids[i]` where token `i` is trained, else `-100`; aligned with `input_ids` (shift for
    /// next-token loss).
    pub labels: Vec<i32>,
    /// Positions: `0..len`, or restarting at each packed sample with neat packing.
    pub position_ids: Vec<u32>,
    /// 1-based index of the packed sample each token belongs to (all 1 unless neat-packed); tokens
    /// attend only within their segment.
    pub segment_ids: Vec<u32>,
}

impl Sequence {
    /// Its length.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether it has no tokens.
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }
}

/// One row of a split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// A `pt` or `sft` row.
    Single(Sequence),
    /// An `rm` row.
    Pair {
        /// The conversation with the preferred reply.
        chosen: Sequence,
        /// The conversation with the other reply.
        rejected: Sequence,
    },
    /// A `kto` row.
    Feedback {
        /// The conversation with its reply.
        completion: Sequence,
        /// Its prompt with another row's reply.
        kl: Sequence,
    },
}

/// A split of a `dataset` artifact, opened for training.
#[derive(Debug, Clone)]
pub struct TokenizedDataset {
    info: DatasetInfo,
    split: Split,
    data: SplitData,
}

impl TokenizedDataset {
    /// Opens `split` of the artifact in `dir`. Fails if the artifact is of another layout version,
    /// or the split is absent (no `val.safetensors` when `val_size` was 0).
    pub fn open(dir: &Path, split: Split) -> anyhow::Result<TokenizedDataset> {
        let info = read_info(dir)?;
        let path = dir.join(split.file());
        anyhow::ensure!(
            info.splits.contains_key(split.name()) && path.is_file(),
            "the dataset in `{}` has no `{}` split{}",
            dir.display(),
            split.name(),
            if split == Split::Val {
                "\nhint: set `val_size` on the dataset step"
            } else {
                ""
            }
        );
        let data = read_split(&path, info.stage)?;
        Ok(TokenizedDataset { info, split, data })
    }

    /// What the artifact says about itself.
    pub fn info(&self) -> &DatasetInfo {
        &self.info
    }

    /// Which split this is.
    pub fn split(&self) -> Split {
        self.split
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.data.rows()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fails unless the tokenizer of `model_dir` is the one the data was tokenized with.
    pub fn check_tokenizer(&self, model_dir: &Path) -> anyhow::Result<()> {
        let fp = super::tokenizer_fingerprint(model_dir)?;
        anyhow::ensure!(
            fp == self.info.tokenizer_fingerprint,
            "the dataset was tokenized with another tokenizer than `{}`'s (fingerprint {} vs {})\nhint: point the dataset step's `model` at the model being trained",
            model_dir.display(),
            &self.info.tokenizer_fingerprint[..12],
            &fp[..12]
        );
        Ok(())
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn example(&self, i: usize) -> Example {
        match &self.data {
            SplitData::Seqs(t) => Example::Single(sequence(t, i)),
            SplitData::Pairs(c, r, _) => Example::Pair {
                chosen: sequence(c, i),
                rejected: sequence(r, i),
            },
            SplitData::Feedback {
                completions, kl, ..
            } => Example::Feedback {
                completion: sequence(completions, i),
                kl: sequence(kl, i),
            },
        }
    }

    /// The length of row `i` in tokens (the longer side of a pair), for length-grouped batching.
    pub fn row_len(&self, i: usize) -> usize {
        let len = |t: &Table| (t.offsets[i + 1] - t.offsets[i]) as usize;
        match &self.data {
            SplitData::Seqs(t) => len(t),
            SplitData::Pairs(c, r, _)
            | SplitData::Feedback {
                completions: c,
                kl: r,
                ..
            } => len(c).max(len(r)),
        }
    }

    /// The margin of pair `i`, when the data has margins (`columns.margin` on the dataset step).
    pub fn margin(&self, i: usize) -> Option<f32> {
        match &self.data {
            SplitData::Pairs(_, _, Some(m)) => m.get(i).copied(),
            _ => None,
        }
    }

    /// Whether the reply of row `i` is desirable, in a `kto` split.
    pub fn desirable(&self, i: usize) -> Option<bool> {
        match &self.data {
            SplitData::Feedback { desirable, .. } => desirable.get(i).copied(),
            _ => None,
        }
    }
}

fn sequence(t: &Table, i: usize) -> Sequence {
    let (a, b) = (t.offsets[i] as usize, t.offsets[i + 1] as usize);
    let n = b - a;
    Sequence {
        input_ids: t.ids[a..b].to_vec(),
        labels: t.labels[a..b].to_vec(),
        position_ids: match &t.positions {
            Some(p) => p[a..b].to_vec(),
            None => (0..n as u32).collect(),
        },
        segment_ids: match &t.segments {
            Some(s) => s[a..b].to_vec(),
            None => vec![1; n],
        },
    }
}

/// Reads `info.json` of a dataset artifact.
pub fn read_info(dir: &Path) -> anyhow::Result<DatasetInfo> {
    let path: PathBuf = dir.join("info.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read `{}` (is this the artifact of a `dataset` step?)",
            path.display()
        )
    })?;
    let info: DatasetInfo = serde_json::from_str(&text)
        .with_context(|| format!("`{}` is not a dataset info file", path.display()))?;
    anyhow::ensure!(
        info.format == FORMAT && info.version == VERSION,
        "`{}` is a dataset of layout {} v{}; this lf reads {FORMAT} v{VERSION}\nhint: re-run the dataset step",
        path.display(),
        info.format,
        info.version
    );
    Ok(info)
}

/// Examples padded into rectangular arrays.
///
/// # Shapes
/// Every vector is `[rows, cols]`, row-major (`shape = [rows, cols]`). For pairs, `rows` is twice the
/// number of examples: all chosen sequences first, then all rejected ones in the same order (for
/// `kto` rows, the completions, then the KL sequences).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[rows, cols]`.
    pub shape: [usize; 2],
    /// Token ids; padding is the pad id.
    pub input_ids: Vec<u32>,
    /// Labels; padding is `-100`.
    pub labels: Vec<i32>,
    /// 1 for tokens, 0 for padding.
    pub attention_mask: Vec<u32>,
    /// Position ids; padding is 0.
    pub position_ids: Vec<u32>,
    /// Segment ids (1-based); padding is 0.
    pub segment_ids: Vec<u32>,
}

/// Pads examples on the right to the longest one.
pub fn collate(examples: &[Example], pad_id: u32) -> Batch {
    let mut seqs: Vec<&Sequence> = Vec::new();
    let mut rejected: Vec<&Sequence> = Vec::new();
    for e in examples {
        match e {
            Example::Single(s) => seqs.push(s),
            Example::Pair {
                chosen: a,
                rejected: b,
            }
            | Example::Feedback {
                completion: a,
                kl: b,
            } => {
                seqs.push(a);
                rejected.push(b);
            }
        }
    }
    seqs.extend(rejected);
    let rows = seqs.len();
    let cols = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut b = Batch {
        shape: [rows, cols],
        input_ids: vec![pad_id; rows * cols],
        labels: vec![IGNORE; rows * cols],
        attention_mask: vec![0; rows * cols],
        position_ids: vec![0; rows * cols],
        segment_ids: vec![0; rows * cols],
    };
    for (r, s) in seqs.iter().enumerate() {
        let at = r * cols;
        let n = s.len();
        b.input_ids[at..at + n].copy_from_slice(&s.input_ids);
        b.labels[at..at + n].copy_from_slice(&s.labels);
        b.attention_mask[at..at + n].fill(1);
        b.position_ids[at..at + n].copy_from_slice(&s.position_ids);
        b.segment_ids[at..at + n].copy_from_slice(&s.segment_ids);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::encode::Encoded;

    fn seq(ids: &[u32], labels: &[i32]) -> Encoded {
        Encoded {
            ids: ids.to_vec(),
            labels: labels.to_vec(),
        }
    }

    #[test]
    fn splits_round_trip_through_safetensors() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Table::new(true);
        t.push_row(&[&seq(&[1, 2], &[IGNORE, 2]), &seq(&[3], &[3])]);
        t.push_row(&[&seq(&[4, 5, 6], &[IGNORE, 5, 6])]);
        let data = SplitData::Seqs(t);
        let path = dir.path().join("train.safetensors");
        write_split(&path, &data).unwrap();
        assert_eq!(read_split(&path, Stage::Sft).unwrap(), data);
        // Byte-identical when written again.
        let first = std::fs::read(&path).unwrap();
        write_split(&path, &data).unwrap();
        assert_eq!(first, std::fs::read(&path).unwrap());

        let mut c = Table::new(false);
        c.push_row(&[&seq(&[1, 2], &[IGNORE, 2])]);
        let mut r = Table::new(false);
        r.push_row(&[&seq(&[1, 3, 4], &[IGNORE, 3, 4])]);
        let pairs = SplitData::Pairs(c.clone(), r.clone(), None);
        write_split(&path, &pairs).unwrap();
        assert_eq!(read_split(&path, Stage::Rm).unwrap(), pairs);
        let with_margins = SplitData::Pairs(c, r, Some(vec![0.5]));
        write_split(&path, &with_margins).unwrap();
        assert_eq!(read_split(&path, Stage::Rm).unwrap(), with_margins);
    }

    #[test]
    fn collate_pads_right_and_puts_rejected_after_chosen() {
        let s = |ids: &[u32]| Sequence {
            input_ids: ids.to_vec(),
            labels: ids.iter().map(|&i| i as i32).collect(),
            position_ids: (0..ids.len() as u32).collect(),
            segment_ids: vec![1; ids.len()],
        };
        let b = collate(
            &[Example::Single(s(&[5, 6, 7])), Example::Single(s(&[8]))],
            0,
        );
        assert_eq!(b.shape, [2, 3]);
        assert_eq!(b.input_ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(b.labels, vec![5, 6, 7, 8, IGNORE, IGNORE]);
        assert_eq!(b.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(b.segment_ids, vec![1, 1, 1, 1, 0, 0]);
        let b = collate(
            &[
                Example::Pair {
                    chosen: s(&[1, 2]),
                    rejected: s(&[1, 3, 4]),
                },
                Example::Pair {
                    chosen: s(&[9]),
                    rejected: s(&[9, 9]),
                },
            ],
            0,
        );
        assert_eq!(b.shape, [4, 3]);
        assert_eq!(b.input_ids, vec![1, 2, 0, 9, 0, 0, 1, 3, 4, 9, 9, 0]);
    }
}
