//! Learning-rate schedules with linear warmup, as transformers' `get_scheduler` defines them: the
//! learning rate of optimizer step `s` (0-based) is `peak · λ(s)`.

use lf_schemas::kinds::train::LrScheduler;

/// A schedule over `total` optimizer steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// The peak learning rate.
    pub peak: f64,
    /// After warmup.
    pub kind: LrScheduler,
    /// Warmup steps.
    pub warmup: usize,
    /// All optimizer steps.
    pub total: usize,
}

impl Schedule {
    /// Warmup steps from a step count (wins when positive) or a ratio of `total` (rounded up).
    pub fn warmup_steps(steps: usize, ratio: f64, total: usize) -> usize {
        if steps > 0 {
            steps
        } else {
            (ratio * total as f64).ceil() as usize
        }
    }

    /// The learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        self.peak * self.factor(step)
    }

    fn factor(&self, step: usize) -> f64 {
        let (s, w, n) = (step as f64, self.warmup as f64, self.total as f64);
        if step < self.warmup {
            return s / w.max(1.0);
        }
        match self.kind {
            LrScheduler::Constant => 1.0,
            LrScheduler::Linear => ((n - s) / (n - w).max(1.0)).max(0.0),
            LrScheduler::Cosine => {
                let progress = (s - w) / (n - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_match_transformers() {
        let s = |kind| Schedule {
            peak: 1.0,
            kind,
            warmup: 2,
            total: 10,
        };
        // transformers: get_linear_schedule_with_warmup(opt, 2, 10) → [0, .5, 1, .875, .75, ...]
        let lin: Vec<f64> = (0..10).map(|i| s(LrScheduler::Linear).lr(i)).collect();
        assert_eq!(lin[..5], [0.0, 0.5, 1.0, 0.875, 0.75]);
        assert_eq!(lin[9], 0.125);
        let cos = s(LrScheduler::Cosine);
        assert_eq!(cos.lr(2), 1.0);
        assert!((cos.lr(6) - 0.5).abs() < 1e-12);
        assert_eq!(s(LrScheduler::Constant).lr(1), 0.5);
        assert_eq!(s(LrScheduler::Constant).lr(9), 1.0);
        assert_eq!(Schedule::warmup_steps(0, 0.1, 95), 10);
        assert_eq!(Schedule::warmup_steps(3, 0.1, 95), 3);
    }
}
