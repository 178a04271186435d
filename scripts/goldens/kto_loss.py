"""KTO loss golden: tests/fixtures/align/kto_golden.json.

Mirrors TRL's KTO loss (loss_type "kto") in plain Python, so it runs without torch. Checked against
TRL 1.16.0 (PyPI), `KTOTrainer._compute_loss` in trl/trainer/kto_trainer.py, whose loss lines are:

    kl = max(0, mean(policy_KL_logps - reference_KL_logps))           # detached
    chosen_losses   = 1 - sigmoid(beta * ((pc - rc) - kl))            # desirable examples
    rejected_losses = 1 - sigmoid(beta * (kl - (pr - rr)))            # undesirable examples
    losses = cat(desirable_weight * chosen_losses, undesirable_weight * rejected_losses)
    loss = losses.nanmean()
    chosen_rewards = beta * (pc - rc); rejected_rewards = beta * (pr - rr)

Inputs are seeded random log-probabilities; values are computed in float64 and written with 17
significant digits. lf's test (`steps/src/train/pref.rs`) feeds the same inputs (as f32) to its
loss and compares within 1e-5.
"""

import json
import math
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[2] / "tests/fixtures/align/kto_golden.json"


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def f32(x):
    """Rounds to the nearest float32, so that lf reads exactly the inputs used here."""
    import struct

    return struct.unpack("f", struct.pack("f", x))[0]


def case(rng, n, beta, wd, wu, kl_shift):
    policy = [f32(rng.uniform(-40.0, -5.0)) for _ in range(n)]
    reference = [f32(p + rng.uniform(-2.0, 2.0)) for p in policy]
    kl_policy = [f32(rng.uniform(-60.0, -20.0)) for _ in range(n)]
    kl_reference = [f32(p - kl_shift + rng.uniform(-2.0, 2.0)) for p in kl_policy]
    desirable = [rng.random() < 0.6 for _ in range(n)]
    kl = max(0.0, sum(p - r for p, r in zip(kl_policy, kl_reference)) / n)
    chosen = [i for i in range(n) if desirable[i]]
    rejected = [i for i in range(n) if not desirable[i]]
    chosen_losses = [1 - sigmoid(beta * ((policy[i] - reference[i]) - kl)) for i in chosen]
    rejected_losses = [1 - sigmoid(beta * (kl - (policy[i] - reference[i]))) for i in rejected]
    losses = [wd * x for x in chosen_losses] + [wu * x for x in rejected_losses]
    per_example = [0.0] * n
    for i, x in zip(chosen + rejected, losses):
        per_example[i] = x
    return {
        "beta": beta,
        "desirable_weight": wd,
        "undesirable_weight": wu,
        "policy": policy,
        "reference": reference,
        "kl_policy": kl_policy,
        "kl_reference": kl_reference,
        "desirable": desirable,
        "kl": kl,
        "losses": per_example,
        "loss": sum(losses) / len(losses),
        "rewards": [beta * (p - r) for p, r in zip(policy, reference)],
    }


def main():
    rng = random.Random(20261201)
    cases = [
        case(rng, 8, 0.1, 1.0, 1.0, 1.0),
        case(rng, 6, 0.5, 1.0, 1.33, 3.0),
        # The policy is further from the reference on the mismatched replies: the estimate is 0.
        case(rng, 5, 0.05, 2.0, 1.0, -1.5),
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": "scripts/goldens/kto_loss.py", "cases": cases}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
