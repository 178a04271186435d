//! Preference losses on the log-probabilities of chosen and rejected replies, as TRL defines them
//! (`DPOTrainer.dpo_loss` for `sigmoid`, `ipo` and `hinge`; `CPOTrainer` for `simpo`; `ORPOTrainer`
//! for `orpo`), and the pairwise loss of reward models.
//!
//! For pair `i`, `πc`/`πr` are the summed log-probabilities of the chosen/rejected reply's tokens under
//! the policy, `ρc`/`ρr` under the reference, `nc`/`nr` the number of reply tokens, and
//! `Δ = (πc − πr) − (ρc − ρr)`:
//!
//! ```text
//! sigmoid  −log σ(βΔ)·(1 − ls) − log σ(−βΔ)·ls
//! ipo      (Δ' − 1/(2β))²            Δ' with length-averaged log-probabilities (π/n, ρ/n)
//! hinge    relu(1 − βΔ)
//! simpo    −log σ(β(πc/nc − πr/nr) − γ)·(1 − ls) − log σ(−β(πc/nc − πr/nr) + γ)·ls
//! orpo     −πc/nc + β·(−log σ(log odds)),
//!          log odds = (πc/nc − πr/nr) − (log(1 − e^(πc/nc)) − log(1 − e^(πr/nr)))
//! ```
//!
//! `pref_ftx` adds `ftx·(−πc/nc)` (the chosen reply's mean token NLL) to every loss but `orpo`'s, which
//! has that term already (LLaMA-Factory's definition). The logged rewards are `β(π − ρ)` with the
//! reference, `β·π/n` without (TRL's). Losses are per pair; a batch's loss is their mean.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use lf_schemas::kinds::train::PrefLoss;

/// The settings of a preference loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefConfig {
    /// Which loss.
    pub loss: PrefLoss,
    /// β.
    pub beta: f64,
    /// Label smoothing (`sigmoid`, `simpo`).
    pub label_smoothing: f64,
    /// SimPO's γ.
    pub gamma: f64,
    /// Weight of the SFT term.
    pub ftx: f64,
}

/// The summed reply log-probabilities of a batch of pairs, and their reply lengths.
///
/// # Shapes
/// - `chosen`, `rejected`: `[pairs]` (f32)
/// - `chosen_len`, `rejected_len`: `pairs` each
#[derive(Debug, Clone)]
pub struct PairLogps<B: Backend> {
    /// `Σ log p` of each chosen reply.
    pub chosen: Tensor<B, 1>,
    /// `Σ log p` of each rejected reply.
    pub rejected: Tensor<B, 1>,
    /// Tokens of each chosen reply.
    pub chosen_len: Vec<usize>,
    /// Tokens of each rejected reply.
    pub rejected_len: Vec<usize>,
}

/// What a preference loss computes for a batch of pairs.
///
/// # Shapes
/// All `[pairs]`.
#[derive(Debug, Clone)]
pub struct PrefOut<B: Backend> {
    /// The loss of each pair (with gradients).
    pub losses: Tensor<B, 1>,
    /// The implicit reward of each chosen reply (no gradients).
    pub chosen_rewards: Tensor<B, 1>,
    /// The implicit reward of each rejected reply (no gradients).
    pub rejected_rewards: Tensor<B, 1>,
}

fn host<B: Backend>(v: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), (device, DType::F32))
}

fn lens<B: Backend>(v: &[usize], device: &B::Device) -> Tensor<B, 1> {
    let v: Vec<f32> = v.iter().map(|&n| n.max(1) as f32).collect();
    host(&v, device)
}

/// `log σ(x)`, computed stably: `min(x, 0) − log(1 + e^(−|x|))`.
pub fn log_sigmoid<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    x.clone().clamp_max(0.0) - x.abs().neg().exp().log1p()
}

/// `log(1 − eˣ)` for `x ≤ 0` (TRL's `log1p(−exp(x))`), kept finite at `x = 0`.
fn log1m_exp<B: Backend>(x: Tensor<B, 1>) -> Tensor<B, 1> {
    x.exp().clamp_max(1.0 - 1e-7).neg().log1p()
}

/// `−log σ(z)·(1 − ls) − log σ(−z)·ls`.
fn smoothed<B: Backend>(z: Tensor<B, 1>, ls: f64) -> Tensor<B, 1> {
    let pos = log_sigmoid(z.clone()).neg();
    if ls == 0.0 {
        pos
    } else {
        pos.mul_scalar(1.0 - ls) - log_sigmoid(z.neg()).mul_scalar(ls)
    }
}

/// The loss and implicit rewards of each pair. `reference` holds the reference model's summed
/// log-probabilities `(chosen, rejected)`, needed by `sigmoid`, `ipo` and `hinge`.
///
/// # Panics
/// If the loss needs a reference and none is given.
pub fn preference_loss<B: Backend>(
    cfg: &PrefConfig,
    policy: &PairLogps<B>,
    reference: Option<(&[f32], &[f32])>,
) -> PrefOut<B> {
    let device = policy.chosen.device();
    let beta = cfg.beta;
    let (pc, pr) = (policy.chosen.clone(), policy.rejected.clone());
    let (nc, nr) = (
        lens::<B>(&policy.chosen_len, &device),
        lens::<B>(&policy.rejected_len, &device),
    );
    let avg_c = pc.clone() / nc.clone();
    let avg_r = pr.clone() / nr.clone();
    let (losses, chosen_rewards, rejected_rewards) = match cfg.loss {
        PrefLoss::Sigmoid | PrefLoss::Ipo | PrefLoss::Hinge => {
            let (rc, rr) = reference.expect("this loss needs reference log-probabilities");
            let (rc, rr) = (host::<B>(rc, &device), host::<B>(rr, &device));
            let (pc, pr, rc, rr) = if cfg.loss == PrefLoss::Ipo {
                (avg_c.clone(), avg_r, rc / nc.clone(), rr / nr)
            } else {
                (pc, pr, rc, rr)
            };
            let delta = (pc.clone() - pr.clone()) - (rc.clone() - rr.clone());
            let losses = match cfg.loss {
                PrefLoss::Sigmoid => smoothed(delta.mul_scalar(beta), cfg.label_smoothing),
                PrefLoss::Hinge => {
                    burn::tensor::activation::relu(delta.mul_scalar(beta).neg().add_scalar(1.0))
                }
                _ => delta.sub_scalar(1.0 / (2.0 * beta)).square(),
            };
            (
                losses,
                (pc - rc).mul_scalar(beta),
                (pr - rr).mul_scalar(beta),
            )
        }
        PrefLoss::Simpo => {
            let z = (avg_c.clone() - avg_r.clone())
                .mul_scalar(beta)
                .sub_scalar(cfg.gamma);
            (
                smoothed(z, cfg.label_smoothing),
                avg_c.clone().mul_scalar(beta),
                avg_r.mul_scalar(beta),
            )
        }
        PrefLoss::Orpo => {
            let log_odds = (avg_c.clone() - avg_r.clone())
                - (log1m_exp(avg_c.clone()) - log1m_exp(avg_r.clone()));
            let losses = avg_c.clone().neg() + log_sigmoid(log_odds).neg().mul_scalar(beta);
            (
                losses,
                avg_c.clone().mul_scalar(beta),
                avg_r.mul_scalar(beta),
            )
        }
    };
    let losses = if cfg.ftx != 0.0 && cfg.loss != PrefLoss::Orpo {
        losses + avg_c.neg().mul_scalar(cfg.ftx)
    } else {
        losses
    };
    PrefOut {
        losses,
        chosen_rewards: chosen_rewards.detach(),
        rejected_rewards: rejected_rewards.detach(),
    }
}

/// The reward model's pairwise loss of each pair, `−log σ(r_chosen − r_rejected − margin)`.
///
/// # Shapes
/// - `chosen`, `rejected`: `[pairs]`
/// - `margin`: `pairs` values, or empty for none
/// - output: `[pairs]`
pub fn pairwise_loss<B: Backend>(
    chosen: Tensor<B, 1>,
    rejected: Tensor<B, 1>,
    margin: &[f32],
) -> Tensor<B, 1> {
    let device = chosen.device();
    let d = chosen - rejected;
    let d = if margin.is_empty() {
        d
    } else {
        d - host::<B>(margin, &device)
    };
    log_sigmoid(d).neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lf_model::{Cpu, CpuDevice};

    fn t(v: &[f32]) -> Tensor<Cpu, 1> {
        host::<Cpu>(v, &CpuDevice)
    }

    fn vals(x: Tensor<Cpu, 1>) -> Vec<f64> {
        x.into_data()
            .to_vec::<f32>()
            .unwrap()
            .into_iter()
            .map(f64::from)
            .collect()
    }

    #[track_caller]
    fn close(got: Vec<f64>, want: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "got {got:?}, want {want:?}");
        }
    }

    /// Two pairs: policy Σlog p chosen (−10, −6) over (4, 3) tokens, rejected (−12, −5) over (5, 2);
    /// reference chosen (−11, −5), rejected (−11.5, −5.5); β = 0.1, γ = 0.5. Expected values below
    /// were computed with python3 from the formulas, `sp(x) = math.log1p(math.exp(-x))` (= −log σ(x)):
    /// Δ = (1.5, −1.5); average log-probabilities chosen (−2.5, −2), rejected (−2.4, −2.5).
    fn fixture() -> (PairLogps<Cpu>, [f32; 2], [f32; 2]) {
        (
            PairLogps {
                chosen: t(&[-10.0, -6.0]),
                rejected: t(&[-12.0, -5.0]),
                chosen_len: vec![4, 3],
                rejected_len: vec![5, 2],
            },
            [-11.0, -5.0],
            [-11.5, -5.5],
        )
    }

    fn cfg(loss: PrefLoss) -> PrefConfig {
        PrefConfig {
            loss,
            beta: 0.1,
            label_smoothing: 0.0,
            gamma: 0.5,
            ftx: 0.0,
        }
    }

    fn run(c: &PrefConfig) -> PrefOut<Cpu> {
        let (p, rc, rr) = fixture();
        preference_loss(c, &p, Some((&rc, &rr)))
    }

    #[test]
    fn sigmoid_matches_the_formula() {
        // [sp(0.1*1.5), sp(0.1*-1.5)] = [0.6209570477895321, 0.770957047789532]
        let out = run(&cfg(PrefLoss::Sigmoid));
        close(vals(out.losses), &[0.620_957_05, 0.770_957_05]);
        // β(πc − ρc) = (0.1, −0.1), β(πr − ρr) = (−0.05, 0.05)
        close(vals(out.chosen_rewards), &[0.1, -0.1]);
        close(vals(out.rejected_rewards), &[-0.05, 0.05]);
        // label smoothing 0.1: [0.9*sp(b*d) + 0.1*sp(-b*d) for d in Δ] = [0.6359570477895321,
        // 0.755957047789532]
        let out = run(&PrefConfig {
            label_smoothing: 0.1,
            ..cfg(PrefLoss::Sigmoid)
        });
        close(vals(out.losses), &[0.635_957_05, 0.755_957_05]);
    }

    #[test]
    fn ipo_uses_length_averaged_logps() {
        // Δ' = (−10/4 + 12/5) − (−11/4 + 11.5/5) = 0.35, (−6/3 + 5/2) − (−5/3 + 5.5/2) = −0.5833333
        // [(d - 1/(2*0.1))**2 for d in Δ'] = [21.622500000000002, 31.173611111111107]
        let out = run(&cfg(PrefLoss::Ipo));
        close(vals(out.losses), &[21.6225, 31.173_611]);
    }

    #[test]
    fn hinge_matches_the_formula() {
        // [max(0, 1 - 0.1*d) for d in Δ] = [0.85, 1.15]
        let out = run(&cfg(PrefLoss::Hinge));
        close(vals(out.losses), &[0.85, 1.15]);
    }

    #[test]
    fn simpo_matches_the_formula() {
        // [sp(0.1*(-2.5 - -2.4) - 0.5), sp(0.1*(-2 - -2.5) - 0.5)] = [0.9803133180448751,
        // 0.9432489459974549]
        let (p, _, _) = fixture();
        let out = preference_loss(&cfg(PrefLoss::Simpo), &p, None);
        close(vals(out.losses), &[0.980_313_3, 0.943_248_9]);
        // β·average: chosen (−0.25, −0.2), rejected (−0.24, −0.25)
        close(vals(out.chosen_rewards), &[-0.25, -0.2]);
        close(vals(out.rejected_rewards), &[-0.24, -0.25]);
    }

    #[test]
    fn orpo_matches_the_formula() {
        // lo = lambda a, b: (a - b) - (math.log1p(-math.exp(a)) - math.log1p(-math.exp(b)))
        // lo(-2.5, -2.4) = -0.10944946678036466, lo(-2, -2.5) = 0.5597629741268209
        // [2.5 + 0.1*sp(lo(-2.5, -2.4)), 2 + 0.1*sp(lo(-2, -2.5))] = [2.5749368565368305,
        // 2.045193160399816]
        let (p, _, _) = fixture();
        let out = preference_loss(&cfg(PrefLoss::Orpo), &p, None);
        close(vals(out.losses), &[2.574_936_9, 2.045_193_2]);
    }

    #[test]
    fn the_sft_term_adds_the_chosen_mean_nll() {
        // [sp(0.1*d) + 0.5*(-a) for d, a in zip(Δ, (-2.5, -2))] = [1.870957047789532,
        // 1.770957047789532]
        let out = run(&PrefConfig {
            ftx: 0.5,
            ..cfg(PrefLoss::Sigmoid)
        });
        close(vals(out.losses), &[1.870_957_05, 1.770_957_05]);
    }

    #[test]
    fn pairwise_loss_matches_the_formula() {
        // sp(1 - 0.5) = 0.4740769841801067, sp(-1 - 1) = 2.1269280110429727;
        // with margins (0.5, 1): sp(0) = 0.6931471805599453, sp(-3) = 3.048587351573742
        close(
            vals(pairwise_loss(t(&[1.0, -1.0]), t(&[0.5, 1.0]), &[])),
            &[0.474_077_0, 2.126_928_0],
        );
        close(
            vals(pairwise_loss(t(&[1.0, -1.0]), t(&[0.5, 1.0]), &[0.5, 1.0])),
            &[std::f64::consts::LN_2, 3.048_587_4],
        );
    }

    #[test]
    fn log_sigmoid_is_finite_far_out() {
        close(
            vals(log_sigmoid(t(&[-100.0, 100.0, 0.0]))),
            &[-100.0, 0.0, -std::f64::consts::LN_2],
        );
    }
}
