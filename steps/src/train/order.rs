//! Which rows make up each optimizer step: a pure function of the seed and the step number, so a
//! resumed run reads exactly the batches an uninterrupted one would.
//!
//! Every epoch visits the rows in a fresh seeded permutation, cut into micro-batches of `batch_size`
//! (the last one may be smaller); `gradient_accumulation_steps` consecutive micro-batches make one
//! optimizer step (the last step of an epoch may have fewer).

use lf_model::rng::Rng;

/// The batches of a training run.
#[derive(Debug, Clone, PartialEq)]
pub struct DataOrder {
    /// Training rows.
    pub rows: usize,
    /// Rows per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub accumulation: usize,
    /// Seed of the permutations.
    pub seed: u64,
    /// Optimizer steps per epoch.
    pub steps_per_epoch: usize,
    /// Optimizer steps of the run.
    pub total_steps: usize,
}

impl DataOrder {
    /// The order for `rows` rows, trained for `epochs` epochs or `max_steps` steps.
    pub fn new(
        rows: usize,
        batch_size: usize,
        accumulation: usize,
        epochs: f64,
        max_steps: Option<usize>,
        seed: u64,
    ) -> anyhow::Result<DataOrder> {
        anyhow::ensure!(rows > 0, "the training split is empty");
        let batches = rows.div_ceil(batch_size);
        let steps_per_epoch = batches.div_ceil(accumulation);
        let total_steps = match max_steps {
            Some(n) => n,
            None => (epochs * steps_per_epoch as f64).ceil() as usize,
        };
        anyhow::ensure!(total_steps > 0, "training would run for 0 steps");
        Ok(DataOrder {
            rows,
            batch_size,
            accumulation,
            seed,
            steps_per_epoch,
            total_steps,
        })
    }

    /// The permutation of the rows in epoch `epoch`.
    pub fn permutation(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.rows).collect();
        let mut rng = Rng::for_stream(self.seed, &format!("train.epoch.{epoch}"));
        for i in (1..order.len()).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            order.swap(i, j);
        }
        order
    }

    /// The epoch optimizer step `step` (0-based) belongs to.
    pub fn epoch_of(&self, step: usize) -> usize {
        step / self.steps_per_epoch
    }

    /// The micro-batches (row indices) of optimizer step `step`, given the permutation of its epoch.
    pub fn micro_batches(&self, step: usize, permutation: &[usize]) -> Vec<Vec<usize>> {
        let in_epoch = step % self.steps_per_epoch;
        let first = in_epoch * self.accumulation;
        (first..first + self.accumulation)
            .map(|b| b * self.batch_size)
            .take_while(|&start| start < self.rows)
            .map(|start| permutation[start..(start + self.batch_size).min(self.rows)].to_vec())
            .collect()
    }

    /// Epochs completed after `steps` optimizer steps (fractional).
    pub fn epochs_done(&self, steps: usize) -> f64 {
        steps as f64 / self.steps_per_epoch as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_once_per_epoch_in_a_seeded_order() {
        let o = DataOrder::new(10, 3, 2, 2.0, None, 7).unwrap();
        // 4 micro-batches per epoch → 2 steps per epoch.
        assert_eq!((o.steps_per_epoch, o.total_steps), (2, 4));
        let p0 = o.permutation(0);
        let mut seen: Vec<usize> = (0..2)
            .flat_map(|s| o.micro_batches(s, &p0))
            .flatten()
            .collect();
        assert_eq!(o.micro_batches(1, &p0).last().unwrap().len(), 1);
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(p0, o.permutation(0));
        assert_ne!(p0, o.permutation(1));
        assert_eq!(o.epoch_of(3), 1);
        let capped = DataOrder::new(10, 3, 2, 2.0, Some(5), 7).unwrap();
        assert_eq!(capped.total_steps, 5);
        assert_eq!(capped.epochs_done(5), 2.5);
    }
}
