//! The validation split, shuffling, packing several rows into one sequence, and pretraining blocks.
//!
//! Order and split come from a seeded hash of each row's content (not of its position), so editing,
//! adding or removing one row moves at most that row between the splits.

use super::encode::{Encoded, IGNORE};

/// A row's content key: blake3 of its source text (the row as JSON, or the document).
pub type Key = [u8; 32];

/// The key of a row's content.
pub fn key_of(content: &[u8]) -> Key {
    *blake3::hash(content).as_bytes()
}

/// How many rows go to validation: `val_size` below 1 is a fraction (rounded, at least 1), else a
/// count. Err if that leaves no training row.
pub fn val_count(rows: usize, val_size: f64) -> Result<usize, String> {
    if val_size <= 0.0 {
        return Ok(0);
    }
    let n = if val_size < 1.0 {
        ((rows as f64 * val_size).round() as usize).max(1)
    } else {
        val_size as usize
    };
    if n >= rows {
        return Err(format!(
            "`val_size` {val_size} asks for {n} validation rows of {rows}, leaving none to train on"
        ));
    }
    Ok(n)
}

/// Indices of `keys` ordered by `blake3(salt, seed, key)`, ties (duplicate rows) by index.
pub fn hash_order(keys: &[Key], seed: u64, salt: &str) -> Vec<usize> {
    let ranks: Vec<[u8; 32]> = keys
        .iter()
        .map(|k| {
            let mut h = blake3::Hasher::new();
            h.update(salt.as_bytes());
            h.update(&seed.to_le_bytes());
            h.update(k);
            *h.finalize().as_bytes()
        })
        .collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by(|&a, &b| ranks[a].cmp(&ranks[b]).then(a.cmp(&b)));
    order
}

/// Splits rows into (train, validation) indices: the `val` rows with the smallest seeded hashes are
/// validation; training keeps the input order, or a seeded shuffle of it.
pub fn split(keys: &[Key], val: usize, seed: u64, shuffle: bool) -> (Vec<usize>, Vec<usize>) {
    split_ranked(
        keys,
        &hash_order(keys, seed, "lf-split"),
        val,
        seed,
        shuffle,
    )
}

/// As [`split`], but rows of one group (the two halves of a preference row unpaired for KTO) go to
/// the same split: the validation split takes the rest of a group its boundary would cut, or leaves
/// the group out when taking it would leave no row to train on. `groups` decide the split, `keys`
/// the shuffled order, so the rows of a group do not stay side by side. Err if the validation split
/// cannot hold whole groups and leave a training row.
pub fn split_grouped(
    groups: &[Key],
    keys: &[Key],
    val: usize,
    seed: u64,
    shuffle: bool,
) -> Result<(Vec<usize>, Vec<usize>), String> {
    let by_rank = hash_order(groups, seed, "lf-split");
    let same = |a: usize, b: usize| groups[by_rank[a]] == groups[by_rank[b]];
    let mut cut = val;
    while cut > 0 && cut < groups.len() && same(cut, cut - 1) {
        cut += 1;
    }
    if val > 0 && cut == groups.len() {
        cut = val;
        while cut > 0 && same(cut, cut - 1) {
            cut -= 1;
        }
        if cut == 0 {
            return Err(format!(
                "`val_size` asks for {val} validation rows of {}, but the rows of one unpaired preference pair stay together and that leaves none to train on",
                groups.len()
            ));
        }
    }
    Ok(split_ranked(keys, &by_rank, cut, seed, shuffle))
}

fn split_ranked(
    keys: &[Key],
    by_rank: &[usize],
    val: usize,
    seed: u64,
    shuffle: bool,
) -> (Vec<usize>, Vec<usize>) {
    let mut val_idx: Vec<usize> = by_rank[..val].to_vec();
    val_idx.sort_unstable();
    let mut is_val = vec![false; keys.len()];
    for &i in &val_idx {
        is_val[i] = true;
    }
    let train: Vec<usize> = if shuffle {
        hash_order(keys, seed, "lf-shuffle")
            .into_iter()
            .filter(|&i| !is_val[i])
            .collect()
    } else {
        (0..keys.len()).filter(|&i| !is_val[i]).collect()
    };
    (train, val_idx)
}

#[cfg(test)]
mod grouped_tests {
    use super::*;

    #[test]
    fn grouped_splits_keep_groups_whole_and_leave_training_rows() {
        // Three groups of two rows; the rows of a group have keys of their own.
        let groups: Vec<Key> = (0..6u8).map(|i| key_of(&[i / 2])).collect();
        let keys: Vec<Key> = (0..6u8).map(|i| key_of(&[100 + i])).collect();
        for val in 1..=5 {
            match split_grouped(&groups, &keys, val, 7, true) {
                Ok((train, val_idx)) => {
                    assert!(!train.is_empty() && !val_idx.is_empty(), "val {val}");
                    for &i in &val_idx {
                        assert!(
                            val_idx.contains(&(i ^ 1)),
                            "val {val}: row {i} without its pair"
                        );
                    }
                    assert_eq!(train.len() + val_idx.len(), 6);
                }
                Err(e) => panic!("val {val}: {e}"),
            }
        }
        // One group only: nothing can be held out.
        let one = [groups[0], groups[0]];
        assert!(split_grouped(&one, &keys[..2], 1, 7, true).is_err());
        assert_eq!(
            split_grouped(&one, &keys[..2], 0, 7, true).unwrap().1,
            Vec::<usize>::new()
        );
    }
}

/// Packs items of the given lengths into bins of `capacity` (best fit, longest first). Returns the
/// bins, each a list of item indices, in the order they were opened.
pub fn pack(lengths: &[usize], capacity: usize) -> Vec<Vec<usize>> {
    use std::collections::{BTreeMap, BTreeSet};
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]).then(a.cmp(&b)));
    let mut bins: Vec<Vec<usize>> = Vec::new();
    let mut room: Vec<usize> = Vec::new();
    // remaining capacity → bins with exactly that much room.
    let mut by_room: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for i in order {
        let len = lengths[i];
        let fit = by_room
            .range(len..)
            .next()
            .map(|(&r, set)| (r, *set.first().expect("no empty sets")));
        let bin = match fit {
            Some((r, bin)) => {
                let set = by_room.get_mut(&r).expect("just found");
                set.remove(&bin);
                if set.is_empty() {
                    by_room.remove(&r);
                }
                bin
            }
            None => {
                bins.push(Vec::new());
                room.push(capacity);
                bins.len() - 1
            }
        };
        bins[bin].push(i);
        room[bin] -= len.min(room[bin]);
        by_room.entry(room[bin]).or_default().insert(bin);
    }
    bins
}

/// Rows of token sequences, flat: what one split of a `pt` or `sft` artifact stores.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// All rows' ids, concatenated.
    pub ids: Vec<u32>,
    /// All rows' labels.
    pub labels: Vec<i32>,
    /// Row `i` is `ids[offsets[i]..offsets[i + 1]]`.
    pub offsets: Vec<u64>,
    /// Position ids restarting at each packed sample (neat packing only).
    pub positions: Option<Vec<u32>>,
    /// 1-based index of the packed sample each token belongs to (neat packing only).
    pub segments: Option<Vec<u32>>,
}

impl Table {
    /// An empty table; `neat` keeps positions and segments.
    pub fn new(neat: bool) -> Table {
        Table {
            offsets: vec![0],
            positions: neat.then(Vec::new),
            segments: neat.then(Vec::new),
            ..Table::default()
        }
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Appends a row made of several samples (one sample unless packed).
    pub fn push_row(&mut self, samples: &[&Encoded]) {
        for (s, sample) in samples.iter().enumerate() {
            self.ids.extend_from_slice(&sample.ids);
            let start = self.labels.len();
            self.labels.extend_from_slice(&sample.labels);
            if let (Some(pos), Some(seg)) = (&mut self.positions, &mut self.segments) {
                pos.extend(0..sample.ids.len() as u32);
                seg.extend(std::iter::repeat_n(s as u32 + 1, sample.ids.len()));
                // No sample learns from the one packed before it.
                if s > 0 && start < self.labels.len() {
                    self.labels[start] = IGNORE;
                }
            }
        }
        self.offsets.push(self.ids.len() as u64);
    }
}

/// Concatenates pretraining documents and cuts them into rows of `block` tokens (the last row may be
/// shorter). With `neat`, each document is a segment whose positions start at 0, and the first token
/// of each segment after the first in a row is not trained.
pub fn blocks(docs: &[&[u32]], block: usize, neat: bool) -> Table {
    let mut table = Table::new(neat);
    let mut row: Vec<Encoded> = Vec::new();
    let mut row_len = 0;
    for doc in docs {
        let mut rest: &[u32] = doc;
        while !rest.is_empty() {
            let take = rest.len().min(block - row_len);
            let ids = rest[..take].to_vec();
            row.push(Encoded {
                labels: ids.iter().map(|&i| i as i32).collect(),
                ids,
            });
            row_len += take;
            rest = &rest[take..];
            if row_len == block {
                flush(&mut table, &mut row, neat);
                row_len = 0;
            }
        }
    }
    if row_len > 0 {
        flush(&mut table, &mut row, neat);
    }
    table
}

fn flush(table: &mut Table, row: &mut Vec<Encoded>, neat: bool) {
    if neat {
        let parts: Vec<&Encoded> = row.iter().collect();
        table.push_row(&parts);
    } else {
        let mut one = Encoded::default();
        for part in row.iter() {
            one.ids.extend_from_slice(&part.ids);
            one.labels.extend_from_slice(&part.labels);
        }
        table.push_row(&[&one]);
    }
    row.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: usize) -> Vec<Key> {
        (0..n)
            .map(|i| key_of(format!("row {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn val_sizes() {
        assert_eq!(val_count(100, 0.0), Ok(0));
        assert_eq!(val_count(100, 0.1), Ok(10));
        assert_eq!(val_count(5, 0.01), Ok(1));
        assert_eq!(val_count(100, 7.0), Ok(7));
        assert!(val_count(5, 5.0).is_err());
    }

    #[test]
    fn split_is_seeded_and_stable_under_edits() {
        let k = keys(200);
        let (train, val) = split(&k, 20, 42, true);
        assert_eq!(val.len(), 20);
        assert_eq!(train.len(), 180);
        assert_eq!(split(&k, 20, 42, true), (train.clone(), val.clone()));
        assert_ne!(split(&k, 20, 7, true).1, val);
        // Not shuffled: training keeps the input order.
        let (plain, val2) = split(&k, 20, 42, false);
        assert_eq!(val2, val);
        assert!(plain.windows(2).all(|w| w[0] < w[1]));
        // Editing one training row leaves the validation set as it was.
        let mut edited = k.clone();
        let victim = train[0];
        edited[victim] = key_of(b"edited");
        let (_, val3) = split(&edited, 20, 42, true);
        let common = val3.iter().filter(|i| val.contains(i)).count();
        assert!(common >= 19, "{common}");
    }

    #[test]
    fn packing_fits_items_into_bins() {
        let lengths = [60, 50, 40, 30, 20, 10, 100];
        let bins = pack(&lengths, 100);
        let mut seen: Vec<usize> = bins.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for bin in &bins {
            assert!(bin.iter().map(|&i| lengths[i]).sum::<usize>() <= 100);
        }
        // 310 tokens need 4 bins: 100 | 60+40 | 50+30+20 | 10.
        assert_eq!(bins, vec![vec![6], vec![0, 2], vec![1, 3, 4], vec![5]]);
        assert_eq!(bins, pack(&lengths, 100));
    }

    #[test]
    fn neat_rows_restart_positions_per_sample() {
        let a = Encoded {
            ids: vec![1, 2, 3],
            labels: vec![IGNORE, 2, 3],
        };
        let b = Encoded {
            ids: vec![4, 5],
            labels: vec![4, 5],
        };
        let mut t = Table::new(true);
        t.push_row(&[&a, &b]);
        assert_eq!(t.ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(t.positions.as_deref(), Some(&[0, 1, 2, 0, 1][..]));
        assert_eq!(t.segments.as_deref(), Some(&[1, 1, 1, 2, 2][..]));
        assert_eq!(t.labels, vec![IGNORE, 2, 3, IGNORE, 5]);
        let mut plain = Table::new(false);
        plain.push_row(&[&a]);
        assert!(plain.positions.is_none());
        assert_eq!(plain.offsets, vec![0, 3]);
    }

    #[test]
    fn pretraining_blocks_cut_and_segment_documents() {
        let docs: Vec<Vec<u32>> = vec![vec![1, 2, 3, 9], vec![4, 5, 9], vec![6, 9]];
        let refs: Vec<&[u32]> = docs.iter().map(Vec::as_slice).collect();
        let t = blocks(&refs, 4, true);
        assert_eq!(t.offsets, vec![0, 4, 8, 9]);
        assert_eq!(t.ids, vec![1, 2, 3, 9, 4, 5, 9, 6, 9]);
        assert_eq!(
            t.segments.as_deref(),
            Some(&[1, 1, 1, 1, 1, 1, 1, 2, 1][..])
        );
        assert_eq!(
            t.positions.as_deref(),
            Some(&[0, 1, 2, 3, 0, 1, 2, 0, 0][..])
        );
        assert_eq!(t.labels[7], IGNORE);
        let t = blocks(&refs, 4, false);
        assert!(t.segments.is_none());
        assert_eq!(t.labels, vec![1, 2, 3, 9, 4, 5, 9, 6, 9]);
    }
}
