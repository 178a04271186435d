#!/usr/bin/env python3
"""Goldens and checks for lf's GGUF export (`export` step).

Default mode writes tests/fixtures/export/quant_golden.json: seeded float32
inputs (as their bit patterns, so they round-trip exactly) and the bytes
gguf-py produces for them as Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, F16 and BF16
(gguf.quants.quantize, which is bit-exact with ggml's reference quantizers),
plus gguf-py's dequantisation of the Q5 blocks (lf's reader is checked
against it).  lf's test
`export::tests::quantisation_matches_gguf_py` compares its own encoders with
these bytes.

gguf-py cannot quantise to the k-quants (Q4_K, Q5_K, Q6_K), so their bytes
(`k_cases`, inputs of whole 256-weight super-blocks) come from ggml itself:
`ggml_quantize_chunk` of the libggml-base that llama-cpp-python ships
(the function llama.cpp's `llama-quantize` calls; without an importance
matrix it runs `quantize_row_q*_K_ref`), with gguf-py's dequantisation of
them.  `export::tests::k_quants_match_ggml` checks lf against both.

    /work/venv/bin/python scripts/goldens/export_gguf.py

Check mode reads GGUF files written by lf with gguf-py's GGUFReader and
compares every tensor with the Hugging Face folder exported beside it
(dequantised with gguf.quants.dequantize, Q/K rows un-permuted for `llama`):

    /work/venv/bin/python scripts/goldens/export_gguf.py --check runs/<pipeline>/<export-step>

Check mode writes nothing; it exits non-zero on a mismatch.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "export" / "quant_golden.json"


def cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(20240601)
    out = [
        ("normal", rng.normal(0.0, 0.05, 128).astype(np.float32)),
        ("wide", (rng.standard_cauchy(64) * 3.0).astype(np.float32)),
        ("zeros_block", np.zeros(32, dtype=np.float32)),
    ]
    # Exact halves after scaling: max |x| = 127 makes d = 1.
    halves = np.zeros(32, dtype=np.float32)
    halves[:8] = [127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5]
    out.append(("halves", halves))
    tiny = rng.normal(0.0, 1e-6, 32).astype(np.float32)
    out.append(("tiny", tiny))
    return out


def k_cases() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(20261201)
    out = [
        ("normal", rng.normal(0.0, 0.05, 512).astype(np.float32)),
        ("wide", (rng.standard_cauchy(256) * 3.0).astype(np.float32)),
        ("zeros", np.zeros(256, dtype=np.float32)),
        ("tiny", rng.normal(0.0, 1e-6, 256).astype(np.float32)),
        ("positive", rng.uniform(0.5, 2.0, 256).astype(np.float32)),
        ("constant", np.full(256, -0.75, dtype=np.float32)),
        ("outlier", np.concatenate([rng.normal(0.0, 0.02, 255), [4.0]]).astype(np.float32)),
    ]
    # One zero sub-block of 32 among normal ones, and a row of integers (exact halves after scaling).
    mixed = rng.normal(0.0, 0.1, 256).astype(np.float32)
    mixed[64:96] = 0.0
    out.append(("zero_sub_block", mixed))
    out.append(("integers", (np.arange(256) % 31 - 15).astype(np.float32)))
    return out


def ggml_quantize(x: np.ndarray, ty: Q) -> bytes:
    """ggml's own quantiser (libggml-base of llama-cpp-python), rows of 256 without an importance matrix."""
    import ctypes
    import llama_cpp

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    x = np.ascontiguousarray(x, dtype=np.float32)
    block_bytes = {Q.Q4_K: 144, Q.Q5_K: 176, Q.Q6_K: 210}[ty]
    out = np.zeros(x.size // 256 * block_bytes, dtype=np.uint8)
    n = lib.ggml_quantize_chunk(int(ty), x.ctypes.data, out.ctypes.data, 0, x.size // 256, 256, None)
    assert n == out.size, (n, out.size)
    return out.tobytes()


def hexbytes(a: np.ndarray) -> str:
    return a.tobytes().hex()


def write_golden() -> None:
    rows = []
    for name, x in cases():
        rows.append({
            "name": name,
            "input_bits": [int(b) for b in x.view(np.uint32)],
            "q8_0": hexbytes(quantize(x.reshape(-1, x.shape[-1]), Q.Q8_0)),
            "q4_0": hexbytes(quantize(x.reshape(-1, x.shape[-1]), Q.Q4_0)),
            "q4_1": hexbytes(quantize(x.reshape(-1, x.shape[-1]), Q.Q4_1)),
            "q5_0": hexbytes(quantize(x.reshape(-1, x.shape[-1]), Q.Q5_0)),
            "q5_1": hexbytes(quantize(x.reshape(-1, x.shape[-1]), Q.Q5_1)),
            "q5_0_dequantized_bits": [int(b) for b in dequantize(quantize(x.reshape(-1, x.shape[-1]), Q.Q5_0), Q.Q5_0).reshape(-1).astype(np.float32).view(np.uint32)],
            "q5_1_dequantized_bits": [int(b) for b in dequantize(quantize(x.reshape(-1, x.shape[-1]), Q.Q5_1), Q.Q5_1).reshape(-1).astype(np.float32).view(np.uint32)],
            "f16": hexbytes(quantize(x, Q.F16)),
            "bf16": hexbytes(quantize(x, Q.BF16)),
        })
    k_rows = []
    for name, x in k_cases():
        row = {"name": name, "input_bits": [int(b) for b in x.view(np.uint32)]}
        for ty in (Q.Q4_K, Q.Q5_K, Q.Q6_K):
            raw = ggml_quantize(x, ty)
            key = ty.name.lower()
            row[key] = raw.hex()
            deq = dequantize(np.frombuffer(raw, dtype=np.uint8).reshape(x.size // 256, -1), ty)
            row[f"{key}_dequantized_bits"] = [int(b) for b in deq.reshape(-1).astype(np.float32).view(np.uint32)]
        k_rows.append(row)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "generator": "scripts/goldens/export_gguf.py",
        "gguf_py": importlib.metadata.version("gguf"),
        "llama_cpp_python": importlib.metadata.version("llama_cpp_python"),
        "numpy": np.__version__,
        "cases": rows,
        "k_cases": k_rows,
    }, indent=1) + "\n")
    print(f"wrote {OUT}")


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    rows = w.shape[0]
    hd = rows // n_head
    return (w.reshape(n_head, hd // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def check(folder: Path) -> int:
    from safetensors.numpy import load_file

    hf = {}
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    for f in files:
        hf.update({k: v.astype(np.float32) for k, v in load_file(folder / f).items()})
    config = json.loads((folder / "config.json").read_text())
    bad = 0
    for path in sorted(folder.glob("*.gguf")):
        r = gguf.GGUFReader(path)
        arch = bytes(r.fields["general.architecture"].parts[-1]).decode()
        print(f"{path.name}: arch {arch}, {len(r.tensors)} tensors, version {r.fields['GGUF.version'].parts[-1][0]}")
        err2, sum2 = 0.0, 0.0
        for t in r.tensors:
            name = t.name
            data = dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)]) if t.tensor_type not in (Q.F32, Q.F16) else np.asarray(t.data, dtype=np.float32)
            if name == "rope_freqs.weight":
                continue
            hf_name = GGUF_TO_HF(name)
            if hf_name not in hf:
                print(f"  {name}: no HF tensor {hf_name}")
                bad += 1
                continue
            want = hf[hf_name]
            if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
                heads = config["num_attention_heads"] if ".attn_q." in name else config.get("num_key_value_heads", config["num_attention_heads"])
                data = unpermute(data.reshape(want.shape), heads)
            data = data.reshape(want.shape)
            diff = np.abs(data - want)
            # Half a unit in the last place of each type, relative to each value; Q8_0: half a step
            # d = max|block|/127, plus the rounding of d itself to f16 (|q| <= 127).
            if t.tensor_type == Q.F32:
                limit = np.zeros_like(want)
            elif t.tensor_type == Q.F16:
                limit = np.maximum(np.abs(want) * 2.0**-11, 2.0**-25)
            elif t.tensor_type == Q.BF16:
                limit = np.abs(want) * 2.0**-8
            elif t.tensor_type == Q.Q8_0:
                blocks = np.abs(want).reshape(-1, 32).max(axis=1, keepdims=True) / 127.0
                step = blocks * (0.5 + 127 * 2.0**-11) + 1e-7
                limit = np.broadcast_to(step, (blocks.shape[0], 32)).reshape(want.shape)
            else:
                # 4/5/6-bit blocks: within the range of each block of 32 (a loose bound; the bytes
                # themselves are checked against ggml's quantisers elsewhere).
                rows = want.reshape(-1, 32)
                span = (rows.max(axis=1, keepdims=True) - rows.min(axis=1, keepdims=True)) + 1e-7
                limit = np.broadcast_to(span, rows.shape).reshape(want.shape)
            if len(want.shape) == 2:
                err2 += float((diff.astype(np.float64) ** 2).sum())
                sum2 += float((want.astype(np.float64) ** 2).sum())
            if (diff > limit * 1.0001).any():
                print(f"  {name} ({t.tensor_type.name}): max abs err {float(diff.max())} beyond rounding")
                bad += 1
        print(f"  tokens: {len(r.fields['tokenizer.ggml.tokens'].data)}, pre: {bytes(r.fields['tokenizer.ggml.pre'].parts[-1]).decode()}")
        print(f"  matrices: relative RMS error {np.sqrt(err2 / sum2):.3e}")
    print("ok" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


def GGUF_TO_HF(name: str) -> str:
    fixed = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
    if name in fixed:
        return fixed[name]
    _, layer, module, suffix = name.split(".")
    m = {
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
        "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
        "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    }[module]
    return f"model.layers.{layer}.{m}.{suffix}"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", type=Path, help="an export artifact folder to verify")
    args = ap.parse_args()
    if args.check:
        sys.exit(check(args.check))
    write_golden()
