#!/usr/bin/env python3
"""Baseline: HF `tokenizers` (Python binding, Rust core) batch-encoding speed.

Tokenizer: tests/fixtures/smollm2/tokenizer/tokenizer.json (SmolLM2, byte-level BPE)
Data: N alpaca-style rows generated deterministically (no files needed).

Row generator (reimplement it exactly to compare with lf):
  PRNG  SplitMix64, 64-bit unsigned wrapping arithmetic, state = SEED (default 42):
          state += 0x9E3779B97F4A7C15
          z = state
          z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
          z = (z ^ (z >> 27)) * 0x94D049BB133111EB
          return z ^ (z >> 31)
        below(n) = next() % n           (modulo bias is accepted)
  words(k): k words, each WORDS[below(len(WORDS))], joined by single spaces;
        after each word except the last, with below(10) == 0 a "," is appended
        to that word (the draw is made after choosing the word, for every word
        but the last).
  Per row i = 0..N-1, in this order of draws:
        instruction = words(4 + below(12)); first char upper-cased (ASCII); + "?"
        has_input   = below(2) == 1
        input       = words(3 + below(18)) + "."   if has_input else ""
        output      = words(20 + below(101)) + "."
        if below(4) == 0: output = output + " " + str(below(100000))
  Row text (what is tokenized, add_special_tokens = False):
        "### Instruction:\n" + instruction + "\n\n"
        + ("### Input:\n" + input + "\n\n" if has_input else "")
        + "### Response:\n" + output
  Checks printed: sha256 of all row texts joined with "\n" (UTF-8), total tokens,
  sum of all token ids.

Run: /work/venv/bin/python scripts/bench/tokenize_hf.py [--rows 100000] [--seed 42]
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import tokenizers
from tokenizers import Tokenizer

REPO = Path(__file__).resolve().parents[2]
TOKENIZER = REPO / "tests" / "fixtures" / "smollm2" / "tokenizer" / "tokenizer.json"

MASK = (1 << 64) - 1

WORDS = [
    "the", "model", "data", "learning", "train", "token", "language", "a", "of", "and",
    "to", "in", "is", "for", "with", "on", "that", "by", "this", "as",
    "explain", "write", "describe", "list", "summarize", "translate", "function", "code",
    "python", "rust", "memory", "fast", "small", "large", "network", "neural", "gradient",
    "loss", "optimizer", "batch", "sequence", "attention", "layer", "weight", "matrix",
    "vector", "example", "question", "answer", "story", "city", "river", "mountain",
    "history", "science", "music", "friend", "computer", "system", "simple", "important",
    "quickly", "carefully", "because", "however", "서울", "한국어", "学习", "数据", "café",
    "naïve", "emoji🙂", "2024", "3.14", "C++", "e-mail", "don't", "it's",
]


class SplitMix64:
    def __init__(self, seed: int):
        self.state = seed & MASK

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n: int) -> int:
        return self.next() % n


def words(rng: SplitMix64, k: int) -> str:
    out = []
    for j in range(k):
        w = WORDS[rng.below(len(WORDS))]
        if j != k - 1 and rng.below(10) == 0:
            w += ","
        out.append(w)
    return " ".join(out)


def gen_rows(n: int, seed: int) -> list[str]:
    rng = SplitMix64(seed)
    rows = []
    for _ in range(n):
        instr = words(rng, 4 + rng.below(12))
        instr = instr[0].upper() + instr[1:] + "?"
        has_input = rng.below(2) == 1
        inp = words(rng, 3 + rng.below(18)) + "." if has_input else ""
        out = words(rng, 20 + rng.below(101)) + "."
        if rng.below(4) == 0:
            out = out + " " + str(rng.below(100000))
        text = "### Instruction:\n" + instr + "\n\n"
        if has_input:
            text += "### Input:\n" + inp + "\n\n"
        text += "### Response:\n" + out
        rows.append(text)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--tokenizer", default=str(TOKENIZER))
    args = ap.parse_args()

    t0 = time.perf_counter()
    rows = gen_rows(args.rows, args.seed)
    gen_s = time.perf_counter() - t0
    digest = hashlib.sha256("\n".join(rows).encode("utf-8")).hexdigest()

    tok = Tokenizer.from_file(args.tokenizer)
    tok.encode_batch(rows[:1000], add_special_tokens=False)  # warm-up

    t0 = time.perf_counter()
    enc = tok.encode_batch(rows, add_special_tokens=False)
    batch_s = time.perf_counter() - t0
    n_tokens = sum(len(e.ids) for e in enc)
    id_sum = sum(sum(e.ids) for e in enc)

    n_seq = min(len(rows), 20_000)
    t0 = time.perf_counter()
    seq_tokens = 0
    for r in rows[:n_seq]:
        seq_tokens += len(tok.encode(r, add_special_tokens=False).ids)
    seq_s = time.perf_counter() - t0

    print(json.dumps({
        "bench": "tokenize_hf",
        "tokenizers_version": tokenizers.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "rayon_threads": os.environ.get("RAYON_NUM_THREADS", "default"),
        "rows": len(rows),
        "seed": args.seed,
        "rows_sha256": digest,
        "total_tokens": n_tokens,
        "token_id_sum": id_sum,
        "first_row": rows[0],
        "first_row_ids_head": enc[0].ids[:16],
        "gen_rows_s": round(gen_s, 3),
        "encode_batch_s": round(batch_s, 3),
        "encode_batch_rows_per_s": round(len(rows) / batch_s, 1),
        "encode_batch_tokens_per_s": round(n_tokens / batch_s, 1),
        "sequential_rows": n_seq,
        "sequential_s": round(seq_s, 3),
        "sequential_rows_per_s": round(n_seq / seq_s, 1),
        "sequential_tokens_per_s": round(seq_tokens / seq_s, 1),
    }, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
