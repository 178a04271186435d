#!/usr/bin/env python3
"""The transformers (+ peft) side of `scripts/bench/cpu.sh`: CPU training throughput with the shapes of
`lf bench train`. Batches of 4 random-token sequences of SEQ tokens, forward + backward + AdamW (lr 1e-4),
f32, 1 warm-up step then 4 timed steps; prints one JSON object with the mean step time, tokens/s and the
process's peak resident memory.

Cases (one per process, so that peak memory belongs to one case):
  tiny   the quickstart's tiny Llama (pipelines/quickstart.yaml: vocab 2048, hidden 128, 4 layers), full
  lora   MODEL (an HF folder or a GGUF file, dequantised to f32 by transformers) with LoRA r8 on all linear layers

Run: python scripts/bench/train_hf.py tiny|lora [--model PATH] [--seq 256] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import time

import torch


def model_for(case: str, path: str | None):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM
    if case == "tiny":
        cfg = LlamaConfig(vocab_size=2048, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                          tie_word_embeddings=True)
        return LlamaForCausalLM(cfg)
    from peft import LoraConfig, get_peft_model
    if path.endswith(".gguf"):
        m = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                                 gguf_file=os.path.basename(path), dtype=torch.float32)
    else:
        m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return get_peft_model(m, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["tiny", "lora"])
    ap.add_argument("--model")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = model_for(args.case, args.model)
    model.train()
    vocab = model.config.vocab_size
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batch, warmup, steps = 4, 1, 4

    def step():
        ids = torch.randint(0, vocab, (batch, args.seq))
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    secs = (time.perf_counter() - t0) / steps
    print(json.dumps({
        "benchmark": "train_hf",
        "case": args.case,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seq_len": args.seq,
        "step_s": secs,
        "tokens_per_s": batch * args.seq / secs,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
