//! Preference losses on the log-probabilities of chosen and rejected replies, as TRL defines them
//! (`DPOTrainer.dpo_loss` for `sigmoid`, `ipo` and `hinge`; `CPOTrainer` for `simpo`; `ORPOTrainer`
//! for `orpo`), KTO's loss on single replies marked desirable or not (`KTOTrainer.kto_loss`), and
//! the pairwise loss of reward models.
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
//!
//! KTO ([`kto_loss`]), for example `i` with policy and reference log-probabilities `πᵢ`, `ρᵢ` of its
//! reply (`nᵢ` tokens) and the micro-batch's KL estimate `z₀ = max(0, mean_j(π'ⱼ − ρ'ⱼ))` over the
//! mismatched replies `π'`, `ρ'` (a constant: no gradient flows through it):
//!
//! ```text
//! desirable    λ_D·(1 − σ(β(πᵢ − ρᵢ − z₀)))  + ftx·(−πᵢ/nᵢ)
//! undesirable  λ_U·(1 − σ(β(z₀ − (πᵢ − ρᵢ))))
//! ```
//!
//! The logged rewards are `β(πᵢ − ρᵢ)`. The SFT term on desirable replies is lf's per-example form of
//! LLaMA-Factory's `pref_ftx` for KTO.

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

/// The settings of KTO's loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KtoConfig {
    /// β.
    pub beta: f64,
    /// λ_D, the weight of desirable examples.
    pub desirable_weight: f64,
    /// λ_U, the weight of undesirable examples.
    pub undesirable_weight: f64,
    /// Weight of the SFT term on desirable replies.
    pub ftx: f64,
}

/// What KTO's loss computes for a batch of examples.
///
/// # Shapes
/// All `[examples]`.
#[derive(Debug, Clone)]
pub struct KtoOut<B: Backend> {
    /// The loss of each example (with gradients).
    pub losses: Tensor<B, 1>,
    /// `β(π − ρ)` of each example (no gradients).
    pub rewards: Tensor<B, 1>,
}

/// The KL estimate of a micro-batch: `max(0, mean(π' − ρ'))` of the policy's and the reference's
/// log-probabilities of the mismatched replies (0 for none).
pub fn kl_estimate(policy: &[f32], reference: &[f32]) -> f64 {
    if policy.is_empty() {
        return 0.0;
    }
    let sum: f64 = policy
        .iter()
        .zip(reference)
        .map(|(&p, &r)| f64::from(p) - f64::from(r))
        .sum();
    (sum / policy.len() as f64).max(0.0)
}

/// KTO's loss of each example (see the module's documentation).
///
/// # Shapes
/// - `policy`: `[examples]`, the summed log-probabilities of each reply
/// - `lens`, `reference`, `desirable`: `examples` values each
pub fn kto_loss<B: Backend>(
    cfg: &KtoConfig,
    policy: Tensor<B, 1>,
    lens: &[usize],
    reference: &[f32],
    kl: f64,
    desirable: &[bool],
) -> KtoOut<B> {
    let device = policy.device();
    let logratio = policy.clone() - host::<B>(reference, &device);
    // 1 − σ(s·β(r − z₀)) with s = +1 for desirable replies and −1 for the others, weighted.
    let sign: Vec<f32> = desirable
        .iter()
        .map(|&d| if d { 1.0 } else { -1.0 })
        .collect();
    let weight: Vec<f32> = desirable
        .iter()
        .map(|&d| {
            if d {
                cfg.desirable_weight
            } else {
                cfg.undesirable_weight
            }
        })
        .map(|w| w as f32)
        .collect();
    let z = (logratio.clone().sub_scalar(kl) * host::<B>(&sign, &device)).mul_scalar(cfg.beta);
    let mut losses =
        burn::tensor::activation::sigmoid(z).neg().add_scalar(1.0) * host::<B>(&weight, &device);
    if cfg.ftx != 0.0 {
        // −π/n on desirable replies, 0 on the others.
        let scale: Vec<f32> = desirable
            .iter()
            .zip(lens)
            .map(|(&d, &n)| if d { -1.0 / n.max(1) as f32 } else { 0.0 })
            .collect();
        losses = losses + (policy * host::<B>(&scale, &device)).mul_scalar(cfg.ftx);
    }
    KtoOut {
        losses,
        rewards: logratio.mul_scalar(cfg.beta).detach(),
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

    fn kto(ftx: f64) -> KtoConfig {
        KtoConfig {
            beta: 0.1,
            desirable_weight: 1.0,
            undesirable_weight: 1.5,
            ftx,
        }
    }

    #[test]
    fn kto_matches_the_formula() {
        // Policy Σlog p (−10, −12, −6) over (4, 5, 2) tokens, reference (−11, −11.5, −5): log-ratios
        // (1, −0.5, −1); the first desirable. KL estimate: mismatched policy (−20, −18, −9) against
        // reference (−21, −18.2, −9.4): mean(1, 0.2, 0.4) = 0.5333333.
        // s = lambda x: 1/(1+math.exp(-x)); z = 1.6/3
        // [1 - s(0.1*(1 - z)), 1.5*(1 - s(0.1*(z + 0.5))), 1.5*(1 - s(0.1*(z + 1)))]
        //   = [0.4883354501562881, 0.7112844435464879, 0.6926123931659802]
        let kl = kl_estimate(&[-20.0, -18.0, -9.0], &[-21.0, -18.2, -9.4]);
        assert!((kl - 1.6 / 3.0).abs() < 1e-6, "{kl}");
        let policy = t(&[-10.0, -12.0, -6.0]);
        let out = kto_loss(
            &kto(0.0),
            policy.clone(),
            &[4, 5, 2],
            &[-11.0, -11.5, -5.0],
            kl,
            &[true, false, false],
        );
        close(
            vals(out.losses),
            &[0.488_335_45, 0.711_284_44, 0.692_612_39],
        );
        close(vals(out.rewards), &[0.1, -0.05, -0.1]);
        // The SFT term adds ftx·(−π/n) to desirable replies only: 0.5·2.5 = 1.25.
        let out = kto_loss(
            &kto(0.5),
            policy,
            &[4, 5, 2],
            &[-11.0, -11.5, -5.0],
            kl,
            &[true, false, false],
        );
        close(
            vals(out.losses),
            &[1.738_335_45, 0.711_284_44, 0.692_612_39],
        );
    }

    #[test]
    fn kto_matches_trl_on_the_golden() {
        // scripts/goldens/kto_loss.py: TRL's `kto_loss` (its batch mean over the concatenated
        // desirable and undesirable losses), on seeded log-probabilities.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/align/kto_golden.json"
        );
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let f32s = |v: &serde_json::Value| -> Vec<f32> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let f64s = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        for c in golden["cases"].as_array().unwrap() {
            let desirable: Vec<bool> = c["desirable"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_bool().unwrap())
                .collect();
            let kl = kl_estimate(&f32s(&c["kl_policy"]), &f32s(&c["kl_reference"]));
            assert!(
                (kl - c["kl"].as_f64().unwrap()).abs() < 1e-5,
                "{kl} vs {}",
                c["kl"]
            );
            let cfg = KtoConfig {
                beta: c["beta"].as_f64().unwrap(),
                desirable_weight: c["desirable_weight"].as_f64().unwrap(),
                undesirable_weight: c["undesirable_weight"].as_f64().unwrap(),
                ftx: 0.0,
            };
            let n = desirable.len();
            let out = kto_loss(
                &cfg,
                t(&f32s(&c["policy"])),
                &vec![1; n],
                &f32s(&c["reference"]),
                kl,
                &desirable,
            );
            let losses = vals(out.losses);
            close(losses.clone(), &f64s(&c["losses"]));
            let mean = losses.iter().sum::<f64>() / n as f64;
            assert!((mean - c["loss"].as_f64().unwrap()).abs() < 1e-5);
            close(vals(out.rewards), &f64s(&c["rewards"]));
        }
    }

    #[test]
    fn the_kl_estimate_is_never_negative() {
        assert_eq!(kl_estimate(&[-10.0], &[-9.0]), 0.0);
        assert_eq!(kl_estimate(&[], &[]), 0.0);
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
