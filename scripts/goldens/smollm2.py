#!/usr/bin/env python3
"""Reference outputs for the real SmolLM2-135M-Instruct Q4_1 GGUF.

Needs the model: scripts/fetch-models.sh (or $LF_MODELS_DIR).

Output: tests/fixtures/smollm2/
    logits.safetensors   f32 [vocab] logits at the LAST position of each prompt,
                         tensors named prompt0..prompt3
    logits.json          prompts, rendered text, token ids, top-5 ids/values for
                         every position
    greedy.json          32 greedy new tokens per prompt (no EOS stop) + text
    tokenize_golden.json ids / pieces / decoded text for a ~30 string corpus
    tokenizer/           the transformers GGUF-derived tokenizer, save_pretrained
    gguf_info.json       GGUF header, metadata (long arrays summarised), tensor
                         table, and dequantisation samples/checksums

transformers loads the GGUF by dequantising every tensor to f32 with the `gguf`
package (Q4_1 / Q8_0 -> f32), un-permuting attn_q / attn_k (llama.cpp stores
them in its interleaved-RoPE row order) and tying lm_head to token_embd
(the file has no output.weight).  All compute is f32.

Run: /work/venv/bin/python scripts/goldens/smollm2.py   (from repo root)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("LF_MODELS_DIR", REPO / ".models"))
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = REPO / "tests" / "fixtures" / "smollm2"

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
torch.use_deterministic_algorithms(True)

PROMPTS = [
    {"chat": True, "messages": [{"role": "user", "content": "Who are you?"}]},
    {"chat": True, "messages": [{"role": "user", "content": "한국의 수도는 어디인가요?"}]},
    {"chat": True, "messages": [{"role": "user", "content":
                                 "Write a Python function that reverses a string."}]},
    {"chat": False, "text": "The capital of France is"},
]
N_GREEDY = 32

TOKENIZE_CORPUS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces and two trailing  ",
    "multiple   inner    spaces",
    "line one\nline two\n\nline four",
    "\n\nstarts with newlines",
    "tabs\tand\ttabs\t",
    "CRLF\r\nline",
    "안녕하세요, 만나서 반갑습니다.",
    "한국의 수도는 서울입니다.",
    "你好，世界！今天天气很好。",
    "日本語のテキストです。",
    "Привет, мир!",
    "Emoji: 😀🎉👍🏽 and 🇰🇷 flag",
    "Numbers: 0 1 12 123 1234 3.14159 -42 1e-5 1,000,000",
    "Year 2024, phone 010-1234-5678",
    "def add(a, b):\n    return a + b\n",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "<|im_start|>user\nHi there!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|im_end|>more text",
    "<|im_start|> not closed <|im_start",
    "<repo_name>lf<file_sep>src/main.rs",
    "don't won't I'm you're we'll they've",
    "URL: https://example.com/path?a=1&b=two#frag",
    "MiXeD CaSe WoRdS and UPPERCASE",
    "",
    " ",
    "a",
]


def r7(x: float) -> float:
    return float(f"{x:.7g}")


def write_json(path: Path, obj, indent=None) -> None:
    sep = (",", ":") if indent is None else None
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent, separators=sep) + "\n")


def render(tok, p) -> str:
    if p["chat"]:
        return tok.apply_chat_template(p["messages"], tokenize=False, add_generation_prompt=True)
    return p["text"]


@torch.no_grad()
def forward_logits(model, ids):
    return model(input_ids=torch.tensor([ids])).logits[0].float()


@torch.no_grad()
def greedy_manual(model, ids, n):
    ids = list(ids)
    start = len(ids)
    margins = []
    for _ in range(n):
        lg = forward_logits(model, ids)[-1]
        t2 = torch.topk(lg, 2)
        margins.append(float(t2.values[0] - t2.values[1]))
        ids.append(int(t2.indices[0]))
    return ids[start:], margins


@torch.no_grad()
def greedy_generate(model, ids, n):
    model.generation_config.eos_token_id = None
    out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         eos_token_id=None, pad_token_id=2, top_k=None, top_p=None,
                         temperature=None)
    return out[0, len(ids):].tolist()


def summarise_value(v):
    if isinstance(v, (bytes, bytearray)):
        v = v.decode("utf-8", "replace")
    if isinstance(v, list):
        items = [x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else x for x in v]
        if len(items) > 16:
            h = hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()
            return {"len": len(items), "first": items[:10], "last": items[-3:],
                    "sha256_of_json_list": h}
        return items
    if isinstance(v, float):
        return v
    return v


def gguf_info(path: Path, model) -> dict:
    import gguf
    from gguf import GGUFReader
    from gguf.quants import dequantize
    r = GGUFReader(str(path))
    header = {}
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            header[k] = int(f.parts[f.data[0]][0]) if f.data else None
            continue
        types = [t.name for t in f.types]
        val = f.contents()
        meta[k] = {"type": types if len(types) > 1 else types[0], "value": summarise_value(val)}
    tt = r.fields["tokenizer.ggml.token_type"].contents()
    counts = {}
    for t in tt:
        counts[str(t)] = counts.get(str(t), 0) + 1
    toks = r.fields["tokenizer.ggml.tokens"].contents()
    non_normal = [{"id": i, "token": toks[i], "type": int(t)} for i, t in enumerate(tt) if t != 1]

    tensors = []
    samples = {}
    for t in r.tensors:
        deq = dequantize(t.data, t.tensor_type).astype(np.float32)
        # numpy shape is reversed GGUF ne: ne = [ne0 (fastest), ne1, ...]
        flat = deq.reshape(-1)
        tensors.append({
            "name": t.name,
            "ne": [int(x) for x in t.shape],  # GGUF order, ne[0] is the contiguous dim
            "ggml_type": t.tensor_type.name,
            "ggml_type_id": int(t.tensor_type),
            "n_elements": int(t.n_elements),
            "n_bytes": int(t.n_bytes),
            "offset_in_data": int(t.data_offset - r.data_offset),
            "dequant_sum_f64": float(flat.astype(np.float64).sum()),
            "dequant_abs_sum_f64": float(np.abs(flat.astype(np.float64)).sum()),
        })
        if t.name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                      "blk.0.ffn_down.weight", "blk.0.attn_norm.weight", "output_norm.weight"):
            row_len = int(t.shape[0])
            s = {"row_len": row_len, "row0_first64": [float(x) for x in flat[:64]]}
            if t.name == "token_embd.weight":
                for tid in (1, 2, 49151):
                    s[f"row{tid}_first32"] = [float(x) for x in flat[tid * row_len: tid * row_len + 32]]
            samples[t.name] = s

    # cross-check against what transformers loaded
    sd = model.state_dict()
    emb = sd["model.embed_tokens.weight"].numpy()
    assert np.array_equal(emb[1, :32], np.array(samples["token_embd.weight"]["row1_first32"], dtype=np.float32))
    nh, nkv, hd = model.config.num_attention_heads, model.config.num_key_value_heads, model.config.head_dim
    for t in r.tensors:
        if t.name in ("blk.0.attn_q.weight", "blk.0.attn_k.weight"):
            n = nh if "attn_q" in t.name else nkv
            g = dequantize(t.data, t.tensor_type).astype(np.float32)  # [out, in]
            hf = np.empty_like(g)
            for h in range(n):
                for d in range(hd // 2):
                    for j in range(2):
                        hf[h * hd + j * (hd // 2) + d] = g[h * hd + 2 * d + j]
            key = "q_proj" if "attn_q" in t.name else "k_proj"
            assert np.array_equal(hf, sd[f"model.layers.0.self_attn.{key}.weight"].numpy()), t.name

    return {
        "file": GGUF,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "file_size": path.stat().st_size,
        "gguf_py_version": getattr(gguf, "__version__", None) or _pkg_version("gguf"),
        "header": header,
        "alignment": int(getattr(r, "alignment", 32)),
        "data_offset": int(r.data_offset),
        "metadata": meta,
        "token_type_counts": counts,
        "token_type_legend": {"1": "NORMAL", "2": "UNKNOWN", "3": "CONTROL",
                              "4": "USER_DEFINED", "5": "UNUSED", "6": "BYTE"},
        "non_normal_tokens": non_normal,
        "tensor_count": len(tensors),
        "tensors": tensors,
        "dequant_samples": samples,
        "notes": (
            "ne is GGUF dimension order (ne[0] = contiguous/fastest); the PyTorch/HF shape "
            "is reversed (e.g. token_embd ne=[576,49152] -> HF [49152,576]). "
            "offset_in_data is relative to data_offset (start of the aligned tensor data "
            "section). dequant_* are computed with gguf-py's dequantize() to f32 on the raw "
            "GGUF data (before transformers un-permutes attn_q/attn_k). Q4_1 block = 32 "
            "weights: f16 d, f16 m, 16 bytes of nibbles (low nibbles = elements 0..15, high "
            "nibbles = 16..31), x = d*q + m. Q8_0 block = 32 weights: f16 d, 32 x i8, x = d*q. "
            "HF un-permute for attn_q (n = n_head) / attn_k (n = n_head_kv), head_dim hd, "
            "rows of the HF-shaped [out, in] matrix: within each head h, "
            "hf_row[h*hd + j*(hd/2) + d] = gguf_row[h*hd + 2*d + j] for d < hd/2, j in {0,1} "
            "(HF rows 0..hd/2 of a head are the GGUF even rows, hd/2..hd the odd rows); see "
            "transformers "
            "LlamaTensorProcessor._reverse_permute_weights. There is no output.weight: "
            "lm_head is tied to token_embd."
        ),
    }


def _pkg_version(name):
    from importlib.metadata import version
    return version(name)


def main() -> None:
    gguf_path = MODELS / GGUF
    if not gguf_path.exists():
        sys.exit(f"missing {gguf_path}; run scripts/fetch-models.sh")
    OUT.mkdir(parents=True, exist_ok=True)

    tok = AutoTokenizer.from_pretrained(str(MODELS), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(MODELS), gguf_file=GGUF, dtype=torch.float32).eval()
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()

    # ---------------- tokenizer dir ----------------
    tdir = OUT / "tokenizer"
    if tdir.exists():
        shutil.rmtree(tdir)
    tok.save_pretrained(str(tdir))
    cfg_path = tdir / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    if "chat_template" not in cfg:
        cfg["chat_template"] = tok.chat_template
    # drop loader-state noise that transformers 5 writes; use a class name that
    # transformers 4.x and 5.x both understand
    for k in ("is_local", "local_files_only"):
        cfg.pop(k, None)
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg["add_bos_token"] = False
    cfg["add_eos_token"] = False
    # compact tokenizer.json (pretty-printed it is ~3.5 MB)
    tok.backend_tokenizer.save(str(tdir / "tokenizer.json"), pretty=False)
    cfg_path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n")
    stm = tdir / "special_tokens_map.json"
    if not stm.exists():
        stm.write_text(json.dumps(tok.special_tokens_map, ensure_ascii=False, indent=2) + "\n")
    # reload check: same ids for the whole corpus
    tok2 = AutoTokenizer.from_pretrained(str(tdir))
    from tokenizers import Tokenizer as RawTok
    raw = RawTok.from_file(str(tdir / "tokenizer.json"))

    # ---------------- tokenize golden ----------------
    cases = []
    for s in TOKENIZE_CORPUS:
        ids = tok(s, add_special_tokens=False).input_ids
        assert tok2(s, add_special_tokens=False).input_ids == ids, s
        assert raw.encode(s, add_special_tokens=False).ids == ids, s
        dec = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        dec_skip = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        cases.append({
            "text": s,
            "ids": ids,
            "tokens": tok.convert_ids_to_tokens(ids),
            "decoded": dec,
            "decoded_skip_special": dec_skip,
            "roundtrip": dec == s,
        })
    write_json(OUT / "tokenize_golden.json", {
        "tokenizer": f"transformers {transformers.__version__} AutoTokenizer.from_pretrained(gguf_file={GGUF})",
        "encode_args": {"add_special_tokens": False},
        "decode_args": {"skip_special_tokens": False, "clean_up_tokenization_spaces": False},
        "special_tokens": tok.special_tokens_map,
        "special_ids": {"bos": tok.bos_token_id, "eos": tok.eos_token_id,
                        "pad": tok.pad_token_id, "unk": tok.unk_token_id},
        "added_tokens": {str(k): v.content for k, v in sorted(tok.added_tokens_decoder.items())},
        "vocab_size": len(tok),
        "notes": "Byte-level BPE (GPT-2 style, model type BPE with 48900 merges, no byte "
                 "fallback, no normalizer, ByteLevel pre-tokenizer add_prefix_space=false with "
                 "the GPT-2 split regex). Added/special tokens (ids 0..16) are matched "
                 "verbatim in the input before BPE. decoded_skip_special drops ids 0..16.",
        "cases": cases,
    }, indent=1)

    # ---------------- logits / greedy ----------------
    from safetensors.torch import save_file, load_file
    tensors = {}
    lj = []
    gj = []
    for i, p in enumerate(PROMPTS):
        text = render(tok, p)
        ids = tok(text, add_special_tokens=False).input_ids
        lg = forward_logits(model, ids)
        tensors[f"prompt{i}"] = lg[-1].contiguous().clone()
        top = torch.topk(lg, 5, dim=-1)
        lj.append({
            "name": f"prompt{i}",
            "chat_template": p["chat"],
            "messages": p.get("messages"),
            "text": text,
            "input_ids": ids,
            "last_argmax": int(lg[-1].argmax()),
            "top5_ids": top.indices.tolist(),
            "top5_values": [[r7(v) for v in row] for row in top.values.tolist()],
        })
        g, margins = greedy_manual(model, ids, N_GREEDY)
        margin = min(margins)
        g2 = greedy_generate(model, ids, N_GREEDY)
        assert g == g2, (i, g, g2)
        gj.append({
            "name": f"prompt{i}",
            "input_ids": ids,
            "new_tokens": g,
            "text": tok.decode(g, skip_special_tokens=False, clean_up_tokenization_spaces=False),
            "min_top1_top2_margin": r7(margin),
            "step_margins": [r7(m) for m in margins],
        })
        print(i, repr(text), len(ids), repr(gj[-1]["text"]), margin, flush=True)
    save_file(tensors, str(OUT / "logits.safetensors"), metadata={
        "source": f"transformers {transformers.__version__} f32 from {GGUF}"})
    back = load_file(str(OUT / "logits.safetensors"))
    for k, v in tensors.items():
        assert torch.equal(back[k], v) and v.dtype == torch.float32 and v.shape == (len(tok),)
    write_json(OUT / "logits.json", {
        "model": GGUF,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "notes": "Forward pass over input_ids (no BOS added: tokenizer.ggml.add_bos_token=false, "
                 "the chat template supplies <|im_start|>), f32, positions 0..n-1. "
                 "logits.safetensors holds the full f32 last-position logits as prompt{i} "
                 "[vocab=49152]; here top5 ids/values (7 sig. digits) for every position, "
                 "sorted by descending logit.",
        "prompts": lj,
    }, indent=None)
    write_json(OUT / "greedy.json", {
        "model": GGUF,
        "transformers_version": transformers.__version__,
        "notes": "Greedy argmax decoding from input_ids, exactly 32 new tokens, EOS (<|im_end|>=2) "
                 "does NOT stop generation. Checked equal between model.generate (KV cache) and a "
                 "full-recompute loop. text = decode(new_tokens, skip_special_tokens=False). "
                 "step_margins[k] = top1 - top2 logit at step k: an implementation whose logits "
                 "differ by more than about half of a small margin may legitimately diverge "
                 "from that step on.",
        "n_new": N_GREEDY,
        "prompts": gj,
    }, indent=1)

    # ---------------- gguf info ----------------
    write_json(OUT / "gguf_info.json", gguf_info(gguf_path, model), indent=1)
    print("done")


if __name__ == "__main__":
    main()
