#!/usr/bin/env python3
"""Goldens for lf's bitsandbytes-compatible quantisation (`lf_model::quant`).

Writes tests/fixtures/quant/bnb_golden.json from bitsandbytes' own functions on the CPU:

- `nf4` / `fp4`, with and without double quantisation (`compress_statistics`): the packed 4-bit
  codes, the absmax scales (or their 8-bit codes, the second-level absmax and the offset) and the
  dequantised values, for one deterministic input matrix;
- `int8`: bitsandbytes' row-wise absmax quantisation (`int8_vectorwise_quant`, threshold 0) and its
  dequantisation;
- the 256-value "dynamic" map double quantisation uses (`create_dynamic_map()`), and the NF4 and
  FP4 code books (`get_4bit_type`).

The input is a formula both sides evaluate exactly (integer hashing, then float64 arithmetic, then
one rounding to float32), so nothing but the results is stored. Large byte strings are stored as
their SHA-256; float vectors as the hex of their IEEE bits.

Double quantisation: bitsandbytes' native CPU kernel for the 8-bit blockwise step
(`cquantize_blockwise_cpu_fp32`) does not always pick the nearest code (here 1 of 265 scales, whose
value lies 5e-6 from a midpoint, gets the farther neighbour). Its CUDA kernel and its PyTorch
reference kernel (`backends/default/ops.py`) pick the nearest; lf follows those, so the double
goldens quantise the scales with the reference kernel and record how many codes the native CPU
kernel gives differently (`cpu_kernel_codes_differ`).

FP4: bitsandbytes' CPU backend dequantises FP4 with a table rounded to four decimals (0.0052,
0.6667, ...); its CUDA kernels and `get_4bit_type("fp4")` use the exact values (x / 12). lf uses the
exact code book, so the FP4 dequantised golden here is computed from `get_4bit_type("fp4")`.

    /work/venv/bin/python scripts/goldens/bnb_quant.py
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import gc
import inspect

import numpy as np
import torch
from bitsandbytes import functional as F
from bitsandbytes.functional import QuantState

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "quant" / "bnb_golden.json"

# 73 x 232: 16936 values = 264 blocks of 64 and a partial block of 40; blocks straddle rows; the
# 265 absmax values make one full and one partial block of 256 for double quantisation.
ROWS, COLS = 73, 232


def value(i: int, row: int) -> float:
    h = (i * 2654435761 + 12345) % (1 << 32)
    v = (h / 4294967296.0 - 0.5) * (0.02 * (1 + row % 7))
    if i % 997 == 0:
        v *= 8.0
    return v


def matrix() -> torch.Tensor:
    vals = [value(r * COLS + c, r) for r in range(ROWS) for c in range(COLS)]
    x = np.array(vals, dtype=np.float64).astype(np.float32).reshape(ROWS, COLS)
    x[5, :] = 0.0  # a row of zeros: absmax 0 (blocks 18..19 partly)
    return torch.from_numpy(x)


def bits(t: torch.Tensor) -> str:
    return t.detach().float().contiguous().numpy().astype("<f4").tobytes().hex()


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def f32_sha(t: torch.Tensor) -> str:
    return sha(t.detach().float().contiguous().numpy().astype("<f4").tobytes())


def reference_quantize_blockwise():
    """bitsandbytes' PyTorch reference kernel of `quantize_blockwise` (registered for every device,
    used wherever no native kernel is)."""
    for o in gc.get_objects():
        if (
            inspect.isfunction(o)
            and o.__module__ == "bitsandbytes.backends.default.ops"
            and "torch.bucketize(scaled, bounds" in inspect.getsource(o)
            and list(inspect.signature(o).parameters) == ["A", "code", "blocksize"]
        ):
            return o
    raise SystemExit("bitsandbytes' reference quantize_blockwise kernel not found")


def four_bit(x: torch.Tensor, kind: str, double: bool) -> dict:
    packed, state = F.quantize_4bit(x, blocksize=64, quant_type=kind, compress_statistics=double)
    code = F.get_4bit_type(kind, device="cpu")
    out = {
        "codes_sha256": sha(packed.contiguous().numpy().tobytes()),
        "codes_head": packed.reshape(-1)[:64].numpy().tobytes().hex(),
    }
    if double:
        plain = F.quantize_4bit(x, blocksize=64, quant_type=kind)[1].absmax
        offset = plain.mean()
        dyn = F.create_dynamic_map()
        q, absmax2 = reference_quantize_blockwise()(plain - offset, dyn, 256)
        assert torch.equal(offset, state.offset)
        out["cpu_kernel_codes_differ"] = int((q != state.absmax).sum())
        state2 = QuantState(absmax=absmax2, code=dyn, blocksize=256, dtype=torch.float32)
        absmax = F.dequantize_blockwise(q, state2) + offset
        out["absmax_codes"] = q.numpy().tobytes().hex()
        out["absmax2"] = bits(absmax2)
        out["offset"] = bits(offset.reshape(1))
        out["absmax"] = bits(absmax)
    else:
        absmax = state.absmax
        out["absmax"] = bits(absmax)
    # Dequantise with the code book (exact for FP4; identical to bitsandbytes' for NF4).
    q = packed.reshape(-1)
    idx = torch.stack([q >> 4, q & 0xF], dim=1).reshape(-1)[: x.numel()].long()
    blocks = torch.arange(x.numel()) // 64

    def dequantize(scales: torch.Tensor) -> torch.Tensor:
        return code[idx] * scales.float()[blocks]

    if kind == "nf4":
        own = F.dequantize_blockwise(state.absmax, state.state2) + state.offset if double else absmax
        ref = F.dequantize_4bit(packed, state).reshape(-1)
        assert torch.equal(ref, dequantize(own)), "nf4 dequantisation differs from bitsandbytes'"
    deq = dequantize(absmax)
    out["dequantized_sha256"] = f32_sha(deq)
    out["dequantized_head"] = bits(deq[:64])
    return out


def int8(x: torch.Tensor) -> dict:
    q, stats, _ = F.int8_vectorwise_quant(x.clone(), threshold=0.0)
    deq = F.int8_vectorwise_dequant(q, stats)
    return {
        "q_sha256": sha(q.contiguous().numpy().tobytes()),
        "q_head": q.reshape(-1)[:64].numpy().tobytes().hex(),
        "row_absmax": bits(stats),
        "dequantized_sha256": f32_sha(deq),
        "dequantized_head": bits(deq.reshape(-1)[:64]),
    }


def main() -> None:
    torch.manual_seed(0)
    x = matrix()
    golden = {
        "bitsandbytes": importlib.metadata.version("bitsandbytes"),
        "torch": importlib.metadata.version("torch"),
        "rows": ROWS,
        "cols": COLS,
        "input_sha256": f32_sha(x),
        "dynamic_map": bits(F.create_dynamic_map()),
        "nf4_code": bits(F.get_4bit_type("nf4", device="cpu")),
        "fp4_code": bits(F.get_4bit_type("fp4", device="cpu")),
        "int8": int8(x),
    }
    for kind in ["nf4", "fp4"]:
        for double in [False, True]:
            golden[f"{kind}{'_double' if double else ''}"] = four_bit(x, kind, double)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(REPO)} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
