#!/usr/bin/env python3
"""The llama.cpp side of `scripts/bench/cpu.sh` (through llama-cpp-python): prompt processing and greedy
decoding on a GGUF file in its own quantisation, with the prompt and shapes of generate_hf.py: 128 prompt
tokens, then 64 new tokens with no stop at EOS, median of 3 runs after a warm-up. Prints one JSON object.

Run: python scripts/bench/generate_llamacpp.py MODEL.gguf [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import llama_cpp
import numpy as np

PROMPT_TEXT = ("The history of machine learning begins with early work on perceptrons and "
               "statistical pattern recognition. Over the decades, researchers developed "
               "new algorithms, larger datasets and faster hardware. ")
N_PROMPT = 128
N_NEW = 64


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    llm = llama_cpp.Llama(args.model, n_ctx=N_PROMPT + N_NEW + 8, n_threads=args.threads,
                          n_threads_batch=args.threads, n_batch=N_PROMPT + N_NEW + 8, verbose=False)
    ids: list[int] = []
    while len(ids) < N_PROMPT:
        ids += llm.tokenize(PROMPT_TEXT.encode(), add_bos=False, special=False)
    ids = ids[:N_PROMPT]

    def run() -> tuple[float, float, list[int]]:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        toks = []
        for _ in range(N_NEW):
            # The logits of the last evaluated token (llama-cpp-python keeps no copy without logits_all).
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
            nxt = int(np.argmax(logits))
            toks.append(nxt)
            llm.eval([nxt])
        return t1 - t0, time.perf_counter() - t1, toks

    run()
    pre, dec = [], []
    for _ in range(3):
        p, d, toks = run()
        pre.append(p)
        dec.append(d)
    print(json.dumps({
        "benchmark": "generate_llamacpp",
        "llama_cpp_python": llama_cpp.__version__,
        "threads": args.threads,
        "prefill_tokens_per_s": N_PROMPT / statistics.median(pre),
        "decode_tokens_per_s": N_NEW / statistics.median(dec),
        "first_tokens": toks[:16],
    }))


if __name__ == "__main__":
    main()
