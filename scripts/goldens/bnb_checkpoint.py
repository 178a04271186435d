#!/usr/bin/env python3
"""Pre-quantised bitsandbytes checkpoints of the tiny Llama, as transformers saves them.

Loads tests/fixtures/tiny/llama with `BitsAndBytesConfig` on the CPU (bitsandbytes' CPU backend),
saves it with `save_pretrained` (the `*-bnb-4bit` layout: `weight` packed uint8, `weight.absmax`,
`weight.quant_map`, `weight.nested_absmax`, `weight.nested_quant_map`,
`weight.quant_state.bitsandbytes__nf4`), and records the quantised model's logits for the sequences
of tiny/llama's golden (transformers' forward with bitsandbytes' dequantisation, f32 compute):

    tests/fixtures/tiny/llama-bnb-nf4/   NF4, double quantisation
    tests/fixtures/tiny/llama-bnb-fp4/   FP4, plain f32 scales
    tests/fixtures/tiny/llama-bnb-int8/  8-bit (`weight` int8, `SCB`); its golden logits are those of the
                                         f32 model with bitsandbytes' dequantised weights (lf's int8 is
                                         weight-only; LLM.int8() would also quantise the activations)

    /work/venv/bin/python scripts/goldens/bnb_checkpoint.py
"""
from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "fixtures" / "tiny"


def main() -> None:
    golden = json.loads((TINY / "llama" / "golden.json").read_text())
    for name, kind, double in [("llama-bnb-nf4", "nf4", True), ("llama-bnb-fp4", "fp4", False)]:
        q = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=kind,
            bnb_4bit_use_double_quant=double,
            bnb_4bit_compute_dtype=torch.float32,
        )
        model = AutoModelForCausalLM.from_pretrained(
            TINY / "llama", quantization_config=q, device_map="cpu", dtype=torch.float32
        ).eval()
        out = TINY / name
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        sequences = []
        with torch.no_grad():
            for seq in golden["sequences"]:
                ids = torch.tensor([seq["input_ids"]])
                logits = model(ids).logits[0].float()
                sequences.append({
                    "input_ids": seq["input_ids"],
                    "logits": [[float(f"{v:.7g}") for v in row] for row in logits.tolist()],
                })
        (out / "golden.json").write_text(json.dumps({
            "model": f"tiny/{name}",
            "transformers_version": importlib.metadata.version("transformers"),
            "bitsandbytes_version": importlib.metadata.version("bitsandbytes"),
            "notes": "logits of the 4-bit model in transformers (bitsandbytes dequantises each "
                     "projection, f32 compute), rounded to 7 significant digits",
            "sequences": sequences,
        }) + "\n")
        print(f"wrote {out.relative_to(REPO)}")
    int8(golden)


def int8(golden: dict) -> None:
    from bitsandbytes import functional as F
    from safetensors.torch import load_file

    model = AutoModelForCausalLM.from_pretrained(
        TINY / "llama", quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        device_map="cpu", dtype=torch.float32,
    )
    out = TINY / "llama-bnb-int8"
    shutil.rmtree(out, ignore_errors=True)
    model.save_pretrained(out)
    saved = load_file(out / "model.safetensors")
    dense = AutoModelForCausalLM.from_pretrained(TINY / "llama", dtype=torch.float32).eval()
    with torch.no_grad():
        for name, p in dense.named_parameters():
            module = name.removesuffix(".weight")
            if f"{module}.SCB" in saved:
                p.copy_(F.int8_vectorwise_dequant(saved[name], saved[f"{module}.SCB"]))
        sequences = [
            {
                "input_ids": seq["input_ids"],
                "logits": [[float(f"{v:.7g}") for v in row]
                           for row in dense(torch.tensor([seq["input_ids"]])).logits[0].tolist()],
            }
            for seq in golden["sequences"]
        ]
    (out / "golden.json").write_text(json.dumps({
        "model": "tiny/llama-bnb-int8",
        "transformers_version": importlib.metadata.version("transformers"),
        "bitsandbytes_version": importlib.metadata.version("bitsandbytes"),
        "notes": "logits of tiny/llama with each projection replaced by bitsandbytes' dequantisation "
                 "of the saved int8 weight (int8_vectorwise_dequant), f32, rounded to 7 significant digits",
        "sequences": sequences,
    }) + "\n")
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
