#!/usr/bin/env python3
"""Check that llama.cpp loads the GGUF files lf's `export` step writes, and runs them like transformers.

For every `model-*.gguf` in an export artifact folder:

1. llama.cpp (through llama-cpp-python) loads the file (vocabulary, metadata, tensors);
2. it tokenizes sample texts (special tokens parsed) exactly as the Hugging Face tokenizer of the
   folder does;
3. its logits for a fixed prompt match transformers' on the exported Hugging Face folder (float32),
   within a tolerance that depends on the file's type.

With `--requantize`, it instead checks lf's quantisers against llama.cpp's own: every quantised
`model-<type>.gguf` of the folder must equal, tensor for tensor (type and bytes), what
`llama_model_quantize` writes from the folder's `model-f32.gguf` (`q4_k`, `q5_k`, `q6_k` as
`--pure` Q4_K_S/Q5_K_S/Q6_K; `q4_k_m`, `q5_k_m` as llama.cpp's mixes; the 32-weight types as
theirs, where lf keeps the output projection in Q8_0).

Nothing is written to the folder; the script prints what it compared and exits non-zero on a mismatch. It is a
manual check (lf's tests never run Python); docs/steps/export.md records the versions it passed with.

Setup (any venv): pip install llama-cpp-python transformers torch gguf
Run:   python scripts/goldens/llamacpp_check.py [--requantize] runs/<pipeline>/<export-step> [...]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

TEXTS = [
    "Hello, world! The cat sat on the mat.",
    "<|im_start|>user\nWho are you?<|im_end|>\n<|im_start|>assistant\n",
    "  spaces   and\ttabs\n\nnewlines 12345 3.14159",
    "한국어와 中文 text, émigré naïve café",
]
TOL = {"f32": 1e-3, "f16": 5e-2, "bf16": 2e-1, "q8_0": 2e-1, "q5_1": 5e-1, "q5_0": 5e-1, "q4_1": 5e-1, "q4_0": 5e-1,
       "q4_k": 5e-1, "q5_k": 5e-1, "q6_k": 5e-1, "q4_k_m": 5e-1, "q5_k_m": 5e-1}


def no_repacking() -> None:
    """Turns off llama.cpp's weight repacking (extra CPU buffer types): in llama.cpp 0.5.0 built
    natively on an AVX-512/AMX machine it crashes on every quantised model, the PyPI SmolLM2 Q4_1 file
    included, while the plain kernels run."""
    import llama_cpp.llama_cpp as C

    default = C.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    C.llama_model_default_params = params


def check(folder: Path) -> int:
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    no_repacking()

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
    model.eval()
    prompt = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nThe capital"
    ids = tok(prompt, add_special_tokens=True)["input_ids"]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].float().numpy()
    bad = 0
    for path in sorted(folder.glob("model-*.gguf")):
        ty = re.match(r"model-(.+)\.gguf", path.name).group(1)
        llm = Llama(model_path=str(path), n_ctx=512, logits_all=True, type_k=0, type_v=0, verbose=bool(int(__import__("os").environ.get("VERBOSE", "0"))), n_threads=2)
        arch = llm.metadata.get("general.architecture")
        # Tokenization.
        for text in TEXTS:
            a = llm.tokenize(text.encode(), add_bos=False, special=True)
            b = tok(text, add_special_tokens=False)["input_ids"]
            if a != b:
                print(f"  {path.name}: tokenizes {text!r} as {a}, transformers as {b}")
                bad += 1
        # Logits.
        llm.reset()
        llm.eval(ids)
        got = np.array(llm.scores[: len(ids)], dtype=np.float32)
        err = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        same_top = int((got.argmax(-1) == want.argmax(-1)).sum())
        ok = err <= TOL.get(ty, 0.2) * max(1.0, scale)
        print(
            f"{path.name}: arch {arch}, {llm.n_vocab()} tokens, "
            f"max |logit diff| {err:.3g} (logits up to {scale:.3g}), "
            f"top-1 agrees at {same_top}/{len(ids)} positions {'ok' if ok else 'TOO FAR'}"
        )
        bad += 0 if ok else 1
        if llm.metadata.get("tokenizer.chat_template") is None:
            print(f"  {path.name}: no tokenizer.chat_template")
        del llm
    return bad


# lf's type -> (llama_ftype, pure)
FTYPES = {"q4_0": (2, False), "q4_1": (3, False), "q8_0": (7, False), "q5_0": (8, False), "q5_1": (9, False),
          "q4_k": (14, True), "q4_k_m": (15, False), "q5_k": (16, True), "q5_k_m": (17, False), "q6_k": (18, True)}


def requantize(folder: Path) -> int:
    import ctypes
    import tempfile

    import gguf
    import llama_cpp

    source = folder / "model-f32.gguf"
    if not source.exists():
        print(f"{folder}: no model-f32.gguf to quantise from")
        return 1
    bad = 0
    for path in sorted(folder.glob("model-*.gguf")):
        ty = re.match(r"model-(.+)\.gguf", path.name).group(1)
        if ty not in FTYPES:
            continue
        ftype, pure = FTYPES[ty]
        with tempfile.TemporaryDirectory() as tmp:
            theirs = Path(tmp) / "llama.gguf"
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype = ftype
            params.pure = pure
            params.nthread = 2
            rc = llama_cpp.llama_model_quantize(str(source).encode(), str(theirs).encode(), ctypes.byref(params))
            if rc != 0:
                print(f"{path.name}: llama_model_quantize failed ({rc})")
                bad += 1
                continue
            ours = {t.name: t for t in gguf.GGUFReader(path).tensors}
            same, differ = 0, []
            for t in gguf.GGUFReader(theirs).tensors:
                o = ours.get(t.name)
                lf_output_rule = ty in ("q4_0", "q4_1", "q5_0", "q5_1") and t.name in ("output.weight", "token_embd.weight")
                if o is None:
                    differ.append(f"{t.name}: missing")
                elif o.tensor_type != t.tensor_type:
                    if not lf_output_rule:
                        differ.append(f"{t.name}: {o.tensor_type.name} vs llama.cpp's {t.tensor_type.name}")
                elif bytes(o.data.tobytes()) != bytes(t.data.tobytes()):
                    differ.append(f"{t.name} ({t.tensor_type.name}): bytes differ")
                else:
                    same += 1
            types = sorted({o.tensor_type.name for o in ours.values()})
            print(f"{path.name}: {same}/{len(ours)} tensors byte-identical to llama.cpp's ftype {ftype}{' --pure' if pure else ''} ({', '.join(types)})")
            for d in differ[:10]:
                print(f"  {d}")
            bad += len(differ)
    return bad


if __name__ == "__main__":
    args = sys.argv[1:]
    mode = check
    if args and args[0] == "--requantize":
        mode, args = requantize, args[1:]
    if not args:
        sys.exit(__doc__)
    failures = sum(mode(Path(p)) for p in args)
    print("ok" if failures == 0 else f"{failures} problems")
    sys.exit(1 if failures else 0)
