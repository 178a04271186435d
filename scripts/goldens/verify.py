#!/usr/bin/env python3
"""Load every golden under tests/fixtures back and sanity-check its shape.

Needs only numpy + safetensors + tokenizers + transformers (no model weights
beyond the tiny fixtures).  Exit code != 0 on any problem.

Run: /work/venv/bin/python scripts/goldens/verify.py
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FX = REPO / "tests" / "fixtures"


def main() -> int:
    import torch
    from safetensors.torch import load_file
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    n = 0
    # every json parses
    for p in sorted(FX.rglob("*.json")):
        json.loads(p.read_text(encoding="utf-8"))
        n += 1

    # tiny models: reload and recompute logits
    for d in sorted((FX / "tiny").iterdir()):
        g = json.loads((d / "golden.json").read_text())
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        for s in g["sequences"]:
            assert len(s["logits"]) == len(s["input_ids"])
            assert all(len(r) == m.config.vocab_size for r in s["logits"])
            with torch.no_grad():
                lg = m(input_ids=torch.tensor([s["input_ids"]])).logits[0]
            diff = (lg - torch.tensor(s["logits"])).abs().max().item()
            assert diff < 1e-4, (d.name, diff)
        assert len(g["greedy"]["new_tokens"]) == 16
        print(f"ok tiny/{d.name}")
    tg = json.loads((FX / "tiny" / "llama" / "train_golden.json").read_text())
    assert tg["loss"] > 0 and tg["grad_norm"] > 0 and tg["loss_after_step"] < tg["loss"]

    # smollm2
    sm = FX / "smollm2"
    lj = json.loads((sm / "logits.json").read_text())
    t = load_file(str(sm / "logits.safetensors"))
    for i, p in enumerate(lj["prompts"]):
        x = t[f"prompt{i}"]
        assert x.dtype == torch.float32 and x.shape == (49152,)
        assert int(x.argmax()) == p["last_argmax"] == p["top5_ids"][-1][0]
        assert abs(float(x.max()) - p["top5_values"][-1][0]) < 1e-4 * max(1, abs(float(x.max())))
        assert len(p["top5_ids"]) == len(p["input_ids"])
    gj = json.loads((sm / "greedy.json").read_text())
    assert all(len(p["new_tokens"]) == 32 for p in gj["prompts"])
    tok = Tokenizer.from_file(str(sm / "tokenizer" / "tokenizer.json"))
    tg = json.loads((sm / "tokenize_golden.json").read_text())
    for c in tg["cases"]:
        assert tok.encode(c["text"], add_special_tokens=False).ids == c["ids"], c["text"]
    for p in lj["prompts"]:
        assert tok.encode(p["text"], add_special_tokens=False).ids == p["input_ids"]
    info = json.loads((sm / "gguf_info.json").read_text())
    assert info["tensor_count"] == len(info["tensors"]) == 272
    print("ok smollm2")

    # chat templates
    ct = FX / "chat_templates"
    for d in sorted(p for p in ct.iterdir() if p.is_dir()):
        g = json.loads((d / "golden.json").read_text())
        cfg = json.loads((d / "tokenizer_config.json").read_text())
        assert cfg["chat_template"]
        for c in g["cases"]:
            assert ("text" in c) != bool(c.get("error")), (d.name, c["name"])
        print(f"ok chat_templates/{d.name}: {len(g['cases'])} cases")
    print(f"{n} json files parsed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
