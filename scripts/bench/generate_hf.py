#!/usr/bin/env python3
"""Baseline: transformers CPU prompt processing + greedy generation speed.

Model: SmolLM2-135M-Instruct Q4_1 GGUF (scripts/fetch-models.sh), loaded with
transformers' GGUF support and dequantised to float32 (so this measures f32
matmuls, not Q4_1 kernels). torch threads = 2.

Prompt: exactly 128 tokens: the SmolLM2 tokenization of PROMPT_TEXT repeated
until >= 128 tokens, truncated to 128 (no BOS; first id printed).
Measured (median of --reps runs after one warm-up):
  prefill:  one forward over the 128 prompt tokens with a fresh KV cache
  decode:   64 greedy steps, one token each, reusing the KV cache
            (EOS does not stop generation)
  generate: model.generate(max_new_tokens=64, min_new_tokens=64, do_sample=False)
            end to end (prefill + 64 tokens)
Prints one JSON object.

Run: /work/venv/bin/python scripts/bench/generate_hf.py [--reps 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("LF_MODELS_DIR", REPO / ".models"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT_TEXT = ("The history of machine learning begins with early work on perceptrons and "
               "statistical pattern recognition. Over the decades, researchers developed "
               "new algorithms, larger datasets and faster hardware. ")
N_PROMPT = 128
N_NEW = 64


@torch.inference_mode()
def prefill(model, ids):
    cache = DynamicCache()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    return out.logits[:, -1, :], out.past_key_values


@torch.inference_mode()
def decode(model, logits, cache, n):
    toks = []
    nxt = logits.argmax(-1, keepdim=True)
    for _ in range(n):
        toks.append(int(nxt))
        out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        nxt = out.logits[:, -1, :].argmax(-1, keepdim=True)
    return toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(MODELS), gguf_file=GGUF, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    model.generation_config.eos_token_id = None

    ids = []
    while len(ids) < N_PROMPT:
        ids += tok(PROMPT_TEXT, add_special_tokens=False).input_ids
    ids = torch.tensor([ids[:N_PROMPT]])

    # warm-up
    lg, cache = prefill(model, ids)
    decode(model, lg, cache, 4)

    pre, dec, gen = [], [], []
    toks = None
    for _ in range(args.reps):
        t0 = time.perf_counter()
        lg, cache = prefill(model, ids)
        t1 = time.perf_counter()
        toks = decode(model, lg, cache, N_NEW)
        t2 = time.perf_counter()
        pre.append(t1 - t0)
        dec.append(t2 - t1)
    for _ in range(args.reps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW,
                                 min_new_tokens=N_NEW, do_sample=False, eos_token_id=None,
                                 pad_token_id=2, top_k=None, top_p=None, temperature=None)
        gen.append(time.perf_counter() - t0)
    assert out[0, N_PROMPT:].tolist() == toks, "manual decode != generate()"

    p, d, g = statistics.median(pre), statistics.median(dec), statistics.median(gen)
    print(json.dumps({
        "bench": "generate_hf",
        "model": GGUF + " (dequantised to f32)",
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "prompt_tokens": N_PROMPT,
        "new_tokens": N_NEW,
        "first_prompt_ids": ids[0, :8].tolist(),
        "generated_head": toks[:16],
        "prefill_s": round(p, 4),
        "prefill_tokens_per_s": round(N_PROMPT / p, 1),
        "decode_s": round(d, 4),
        "decode_tokens_per_s": round(N_NEW / d, 2),
        "generate_s": round(g, 4),
        "generate_new_tokens_per_s": round(N_NEW / g, 2),
        "reps": args.reps,
    }, indent=1))


if __name__ == "__main__":
    main()
