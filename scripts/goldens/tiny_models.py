#!/usr/bin/env python3
"""Generate tiny random-initialised HF checkpoints + reference outputs.

Output: tests/fixtures/tiny/<name>/
    config.json, model.safetensors (or shards + index), generation_config.json
    golden.json        logits for a few input-id sequences + 16 greedy tokens
    train_golden.json  (llama only) loss / grad-norm / one AdamW step

Everything is seeded and computed in float32 on CPU.

config.json style: transformers >= 5 writes RoPE settings as
`"rope_parameters": {...}`; checkpoints in the wild (transformers 4.x) use
top-level `"rope_theta"` + `"rope_scaling"` and `"torch_dtype"`.  Every model
here is rewritten to the 4.x ("legacy") layout EXCEPT `mistral`, which keeps
the 5.x `rope_parameters` layout, so a loader is exercised on both.  The
script checks that transformers loads both layouts to the same logits.

Run: /work/venv/bin/python scripts/goldens/tiny_models.py   (from repo root)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "tiny"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
torch.use_deterministic_algorithms(True)

VOCAB = 256
EMBED_STD = 0.5  # chosen so greedy runs are varied and top1-top2 margins are >= 1e-2
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=256,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
    attention_dropout=0.0,
)

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # small on purpose, so that the llama3 frequency rewrite actually changes
    # some of the 8 frequencies of head_dim 16.
    "original_max_position_embeddings": 64,
}

# input id sequences for the logits goldens (lengths 1..12)
SEQUENCES = [
    [1],
    [1, 17, 42],
    [5, 250, 3, 99, 128, 7, 64],
    [1, 200, 31, 8, 77, 154, 9, 240, 33, 61, 102, 255],
]
GREEDY_PROMPT = [1, 45, 12, 190, 77]
GREEDY_NEW = 16


def r7(x: float) -> float:
    return float(f"{x:.7g}")


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Replace HF's tiny default init with larger, fully random values so that
    logits are well separated and every parameter (norm weights, biases)
    matters for the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("norm.weight"):
                # RMSNorm gains (incl. qwen3 q_norm / k_norm): around 1
                p.copy_(1.0 + 0.2 * (torch.rand(p.shape, generator=g) - 0.5) * 2)
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(EMBED_STD * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


def make_config(model_type: str, **kw):
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    args = dict(COMMON)
    args.update(kw)
    return cfg_cls(**args)


def legacy_config(path: Path) -> None:
    """Rewrite config.json to the transformers 4.x layout."""
    p = path / "config.json"
    cfg = json.loads(p.read_text())
    rp = cfg.pop("rope_parameters", None)
    if rp is not None:
        rp = dict(rp)
        cfg["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") == "default" and len(rp) == 1:
            cfg["rope_scaling"] = None
        else:
            cfg["rope_scaling"] = rp
    if "dtype" in cfg:
        cfg["torch_dtype"] = cfg.pop("dtype")
    p.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


@torch.no_grad()
def logits_for(model, ids):
    x = torch.tensor([ids], dtype=torch.long)
    return model(input_ids=x).logits[0].float()


@torch.no_grad()
def greedy(model, prompt, n):
    """Greedy decode with full recompute each step; also returns the min
    top1-top2 logit margin seen (to judge how robust the golden is)."""
    ids = list(prompt)
    min_margin = math.inf
    for _ in range(n):
        lg = logits_for(model, ids)[-1]
        top2 = torch.topk(lg, 2)
        min_margin = min(min_margin, float(top2.values[0] - top2.values[1]))
        ids.append(int(top2.indices[0]))
    return ids[len(prompt):], min_margin


@torch.no_grad()
def greedy_generate(model, prompt, n):
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=n,
        min_new_tokens=n,
        do_sample=False,
        eos_token_id=None,
    )
    return out[0, len(prompt):].tolist()


def golden(model, name, extra):
    model.eval()
    seqs = []
    for ids in SEQUENCES:
        lg = logits_for(model, ids)
        seqs.append({
            "input_ids": ids,
            "logits": [[r7(v) for v in row] for row in lg.tolist()],
            "argmax": lg.argmax(-1).tolist(),
        })
    g, margin = greedy(model, GREEDY_PROMPT, GREEDY_NEW)
    g2 = greedy_generate(model, GREEDY_PROMPT, GREEDY_NEW)
    assert g == g2, f"{name}: manual greedy {g} != generate() {g2}"
    d = {
        "model": name,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "dtype_compute": "float32",
        "notes": "logits are f32 from transformers (eval mode, no attention mask, "
                 "position ids 0..n-1), rounded to 7 significant digits. "
                 "greedy: argmax decoding, no EOS stopping, exactly 16 new tokens; "
                 "greedy_min_margin is the smallest top1-top2 logit gap seen.",
        "sequences": seqs,
        "greedy": {"prompt": GREEDY_PROMPT, "new_tokens": g,
                   "greedy_min_margin": r7(margin)},
    }
    d.update(extra)
    return d


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")


def save(model, path: Path, legacy: bool, **kw):
    if path.exists():
        shutil.rmtree(path)
    model.save_pretrained(path, safe_serialization=True, **kw)
    if legacy:
        legacy_config(path)


def check_reload(path: Path, ref_model, dtype=torch.float32, atol=0.0):
    m = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    for ids in SEQUENCES:
        a = logits_for(m, ids)
        b = logits_for(ref_model, ids)
        diff = float((a - b).abs().max())
        assert diff <= atol, f"{path}: reload diff {diff}"
    return m


def train_golden(model) -> dict:
    """One fixed batch, loss/grad-norm/AdamW step, as transformers does it."""
    torch.manual_seed(0)
    m = model
    m.train()  # dropout is 0, so train == eval numerically
    input_ids = torch.tensor([
        [1, 23, 54, 87, 120, 9, 200, 31, 66, 2],
        [1, 77, 15, 230, 4, 181, 2, 0, 0, 0],  # right-padded with pad id 0
    ])
    attention_mask = torch.tensor([
        [1] * 10,
        [1] * 7 + [0] * 3,
    ])
    labels = input_ids.clone()
    labels[0, :4] = -100      # prompt part of row 0
    labels[1, :3] = -100      # prompt part of row 1
    labels[1, 7:] = -100      # padding
    out = m(input_ids=input_ids, attention_mask=attention_mask, labels=labels)
    loss = out.loss

    # manual reference of the same quantity
    logits = out.logits.float()
    shift_logits = logits[:, :-1, :].reshape(-1, VOCAB)
    shift_labels = labels[:, 1:].reshape(-1)
    manual = torch.nn.functional.cross_entropy(shift_logits, shift_labels,
                                               ignore_index=-100, reduction="mean")
    assert abs(float(manual) - float(loss)) < 1e-6, (float(manual), float(loss))
    per_tok = torch.nn.functional.cross_entropy(shift_logits, shift_labels,
                                                ignore_index=-100, reduction="none")
    n_tokens = int((shift_labels != -100).sum())

    m.zero_grad(set_to_none=True)
    loss.backward()
    params = [p for p in m.parameters() if p.requires_grad]
    grads64 = [p.grad.detach().double() for p in params]
    manual_norm = math.sqrt(sum(float((g * g).sum()) for g in grads64))
    # huge finite max_norm: reports the total norm, never clips
    total_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=1e30, norm_type=2.0))
    per_param_norm = {n: r7(float(p.grad.norm())) for n, p in m.named_parameters()}

    state = {k: v.clone() for k, v in m.state_dict().items()}
    saved_grads = [p.grad.clone() for p in params]

    def step_and_eval(clip):
        m.load_state_dict(state)
        for p, g in zip(params, saved_grads):
            p.grad = g.clone()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, max_norm=clip)
        opt = torch.optim.AdamW(params, lr=1e-2, betas=(0.9, 0.999), eps=1e-8,
                                weight_decay=0.01)
        opt.step()
        with torch.no_grad():
            l2 = m(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        return float(l2)

    loss_after = step_and_eval(None)
    loss_after_clip = step_and_eval(1.0)
    m.load_state_dict(state)
    m.zero_grad(set_to_none=True)
    m.eval()

    return {
        "model": "tiny/llama",
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "input_ids": input_ids.tolist(),
        "attention_mask": attention_mask.tolist(),
        "labels": labels.tolist(),
        "n_loss_tokens": n_tokens,
        "loss": float(loss),
        "per_token_loss": [r7(float(v)) if lbl != -100 else None
                           for v, lbl in zip(per_tok.tolist(), shift_labels.tolist())],
        "grad_norm": total_norm,
        "grad_norm_f64": manual_norm,
        "per_param_grad_norm": per_param_norm,
        "adamw": {"lr": 1e-2, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                  "params": "all model parameters in one group (weight decay applied to every "
                            "parameter incl. norms/embeddings), torch.optim.AdamW defaults "
                            "otherwise (amsgrad=False, decoupled decay: p *= 1 - lr*wd)"},
        "loss_after_step": loss_after,
        "loss_after_step_clip1": loss_after_clip,
        "notes": (
            "Causal-LM loss exactly as transformers computes it: logits for positions "
            "0..T-2 are scored against labels at positions 1..T-1 (i.e. labels are shifted "
            "LEFT by one inside the loss; the caller passes labels aligned with input_ids). "
            "Equivalently labels are padded with -100 on the right and shifted: "
            "shift_labels[t] = labels[t+1], last position ignored. Loss = mean cross-entropy "
            "(f32, natural log) over all shifted label positions != -100 across the whole "
            "batch (token-level mean, not per-row mean). per_token_loss is indexed by the "
            "flattened shifted position (row*(T-1)+t), null where ignored. Row 1 is "
            "right-padded (pad id 0, attention_mask 0, label -100); with causal attention the "
            "pads do not influence real positions; position ids are 0..T-1 for both rows. "
            "grad_norm = torch.nn.utils.clip_grad_norm_(all params, max_norm=1e30) total L2 "
            "norm (f32); grad_norm_f64 the same computed in f64. loss_after_step: loss on "
            "the same batch after one AdamW step with no clipping; loss_after_step_clip1: "
            "same but gradients first clipped to total norm 1.0 (clip_grad_norm_). "
            "Model in train() mode but all dropouts are 0."
        ),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    summary = {}

    specs = [
        # name, model_type, seed, config kwargs, legacy-config?
        ("llama", "llama", 1001, dict(intermediate_size=128, rope_theta=10000.0,
                                      rope_scaling=dict(LLAMA3_ROPE),
                                      tie_word_embeddings=False,
                                      attention_bias=False, mlp_bias=False), True),
        ("mistral", "mistral", 1002, dict(intermediate_size=160, rope_theta=10000.0,
                                          sliding_window=None,
                                          tie_word_embeddings=False), False),
        ("qwen2", "qwen2", 1003, dict(intermediate_size=176, rope_theta=10000.0,
                                      tie_word_embeddings=True, use_sliding_window=False,
                                      sliding_window=None), True),
        ("qwen3", "qwen3", 1004, dict(intermediate_size=128, rope_theta=10000.0,
                                      tie_word_embeddings=True, attention_bias=False,
                                      use_sliding_window=False, sliding_window=None), True),
    ]
    models = {}
    for name, mtype, seed, kw, legacy in specs:
        torch.manual_seed(seed)
        cfg = make_config(mtype, **kw)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        randomise(model, seed)
        if cfg.tie_word_embeddings:
            assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
        model.eval()
        path = OUT / name
        save(model, path, legacy)
        reloaded = check_reload(path, model)
        models[name] = reloaded
        extra = {
            "model_type": mtype,
            "config_style": "v4-legacy (rope_theta/rope_scaling)" if legacy
            else "v5 (rope_parameters)",
            "tie_word_embeddings": bool(cfg.tie_word_embeddings),
            "weights_dtype": "float32",
        }
        write_json(path / "golden.json", golden(reloaded, f"tiny/{name}", extra))
        summary[name] = sorted(os.listdir(path))

    # --- sharded copy of llama ---
    path = OUT / "llama-sharded"
    save(models["llama"], path, True, max_shard_size="200KB")
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (path / "model.safetensors.index.json").exists(), shards
    m = check_reload(path, models["llama"])
    write_json(path / "golden.json", golden(m, "tiny/llama-sharded", {
        "model_type": "llama", "config_style": "v4-legacy (rope_theta/rope_scaling)",
        "tie_word_embeddings": False, "weights_dtype": "float32",
        "same_weights_as": "tiny/llama", "shards": shards}))
    summary["llama-sharded"] = sorted(os.listdir(path))

    # --- bf16 copy of qwen2 ---
    path = OUT / "qwen2-bf16"
    bf = AutoModelForCausalLM.from_pretrained(OUT / "qwen2", dtype=torch.bfloat16)
    save(bf, path, True)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    # sanity: upcasting the bf16 file gives exactly bf16-rounded qwen2 weights
    for (n1, p1), (n2, p2) in zip(m.named_parameters(), models["qwen2"].named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2.to(torch.bfloat16).float()), n1
    from safetensors import safe_open
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        dts = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dts == {"torch.bfloat16"}, dts
    write_json(path / "golden.json", golden(m, "tiny/qwen2-bf16", {
        "model_type": "qwen2", "config_style": "v4-legacy (rope_theta/rope_scaling)",
        "tie_word_embeddings": True, "weights_dtype": "bfloat16",
        "bf16_of": "tiny/qwen2 (round-to-nearest-even f32->bf16)",
        "bf16_note": "logits computed by loading the bf16 weights upcast to f32 "
                     "(from_pretrained(dtype=float32)); all compute in f32"}))
    summary["qwen2-bf16"] = sorted(os.listdir(path))

    # --- training golden ---
    tg = train_golden(models["llama"])
    write_json(OUT / "llama" / "train_golden.json", tg)

    print(json.dumps(summary, indent=1))
    print("train:", tg["loss"], tg["grad_norm"], tg["loss_after_step"], tg["loss_after_step_clip1"])


if __name__ == "__main__":
    sys.exit(main())
