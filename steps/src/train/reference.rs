//! The reference model's log-probabilities for `dpo`, computed once before training and kept in the
//! step's scratch folder so that a resumed run does not compute (or load) the reference again.
//!
//! ```text
//! scratch/reference/logps.safetensors   train_chosen, train_rejected [, val_chosen, val_rejected]
//! ```
//!
//! Each tensor holds, per pair of the split (in the dataset's order), the summed log-probability of the
//! reply's tokens under the reference (f32). The scratch folder is keyed by the step's cache key, which
//! covers the reference model, the data and the numerics, so what is found there always belongs to this
//! run; the row counts are checked anyway. The file is written to a temporary name and renamed.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context as _;
use burn::tensor::backend::Backend;
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype as StDtype, TensorView};

use super::loss::PairBatch;
use super::loss::row_logps;
use crate::data::{Split, TokenizedDataset};
use lf_model::Llama;

/// The folder under the scratch folder.
pub const DIR: &str = "reference";
/// The file in it.
pub const FILE: &str = "logps.safetensors";

/// Summed reply log-probabilities of the pairs of one split.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitLogps {
    /// Per pair, the chosen reply's.
    pub chosen: Vec<f32>,
    /// Per pair, the rejected reply's.
    pub rejected: Vec<f32>,
}

/// The reference's log-probabilities of the training split and, if any, the validation split.
#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// The training split.
    pub train: SplitLogps,
    /// The validation split.
    pub val: Option<SplitLogps>,
}

impl Reference {
    /// The chosen and rejected values of rows `rows` of `split`.
    ///
    /// # Panics
    /// If the split was not computed.
    pub fn rows(&self, split: Split, rows: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let s = match split {
            Split::Train => &self.train,
            Split::Val => self
                .val
                .as_ref()
                .expect("reference log-probs of the val split"),
        };
        (
            rows.iter().map(|&i| s.chosen[i]).collect(),
            rows.iter().map(|&i| s.rejected[i]).collect(),
        )
    }

    /// Computes the reference with `model` (no gradients), `batch_size` pairs at a time.
    pub fn compute<B: Backend>(
        model: &Llama<B>,
        train: &TokenizedDataset,
        val: Option<&TokenizedDataset>,
        batch_size: usize,
        mut progress: impl FnMut(usize),
    ) -> Reference {
        let mut split = |split: Split, data: &TokenizedDataset| {
            let mut out = SplitLogps {
                chosen: Vec::with_capacity(data.len()),
                rejected: Vec::with_capacity(data.len()),
            };
            let rows: Vec<usize> = (0..data.len()).collect();
            for chunk in rows.chunks(batch_size.max(1)) {
                let batch = PairBatch::new(split, data, chunk);
                let k = chunk.len();
                let logps = row_logps(model, &batch.lm)
                    .into_data()
                    .convert::<f32>()
                    .to_vec::<f32>()
                    .expect("f32 data");
                out.chosen.extend_from_slice(&logps[..k]);
                out.rejected.extend_from_slice(&logps[k..2 * k]);
                progress(k);
            }
            out
        };
        Reference {
            train: split(Split::Train, train),
            val: val.map(|v| split(Split::Val, v)),
        }
    }

    /// Reads the reference saved in `scratch`, if there is one that fits splits of `train` and `val`
    /// rows.
    pub fn load(scratch: &Path, train: usize, val: Option<usize>) -> anyhow::Result<Option<Self>> {
        let path = scratch.join(DIR).join(FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Ok(None);
        };
        let st = SafeTensors::deserialize(&bytes)
            .with_context(|| format!("`{}` is damaged", path.display()))?;
        let get = |name: &str, rows: usize| -> anyhow::Result<Vec<f32>> {
            let t = st
                .tensor(name)
                .with_context(|| format!("`{}` has no `{name}`", path.display()))?;
            anyhow::ensure!(
                t.dtype() == StDtype::F32 && t.shape() == [rows],
                "`{}`: `{name}` is not {rows} f32 values",
                path.display()
            );
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect())
        };
        let split = |prefix: &str, rows: usize| -> anyhow::Result<SplitLogps> {
            Ok(SplitLogps {
                chosen: get(&format!("{prefix}_chosen"), rows)?,
                rejected: get(&format!("{prefix}_rejected"), rows)?,
            })
        };
        Ok(Some(Reference {
            train: split("train", train)?,
            val: val.map(|n| split("val", n)).transpose()?,
        }))
    }

    /// Saves the reference into `scratch` (atomically).
    pub fn save(&self, scratch: &Path) -> anyhow::Result<()> {
        let dir = scratch.join(DIR);
        std::fs::create_dir_all(&dir)?;
        let mut named: Vec<(String, Vec<u8>, usize)> = Vec::new();
        let mut add = |prefix: &str, s: &SplitLogps| {
            for (side, v) in [("chosen", &s.chosen), ("rejected", &s.rejected)] {
                let bytes = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                named.push((format!("{prefix}_{side}"), bytes, v.len()));
            }
        };
        add("train", &self.train);
        if let Some(v) = &self.val {
            add("val", v);
        }
        let views: Vec<(String, TensorView<'_>)> = named
            .iter()
            .map(|(n, b, len)| TensorView::new(StDtype::F32, vec![*len], b).map(|v| (n.clone(), v)))
            .collect::<Result<_, _>>()?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &tmp)
            .with_context(|| format!("cannot write `{}`", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_round_trips_through_the_scratch_folder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Reference::load(dir.path(), 2, None).unwrap().is_none());
        let r = Reference {
            train: SplitLogps {
                chosen: vec![-1.5, -0.1 - 0.2],
                rejected: vec![-3.25, f32::MIN_POSITIVE],
            },
            val: Some(SplitLogps {
                chosen: vec![-7.0],
                rejected: vec![-8.0],
            }),
        };
        r.save(dir.path()).unwrap();
        assert_eq!(Reference::load(dir.path(), 2, Some(1)).unwrap(), Some(r));
        assert!(Reference::load(dir.path(), 3, Some(1)).is_err());
    }
}
