#!/usr/bin/env python3
"""Golden renders of real chat templates through transformers.

Input : tests/fixtures/chat_templates/<model>/tokenizer_config.json
        (chat_template + special tokens only; provenance in SOURCES.md there)
Output: tests/fixtures/chat_templates/<model>/golden.json

Each golden case is
    {"name", "messages", "add_generation_prompt", "kwargs", "text"}  or
    {..., "error": true, "message": "..."}   when the template raises.
`kwargs` are extra template variables passed to apply_chat_template (e.g.
date_string, enable_thinking); bos_token/eos_token/... come from the
tokenizer_config.json special tokens, exactly as transformers passes them.

Rendering is done with tokenizer.apply_chat_template(messages, tokenize=False,
add_generation_prompt=...) on a PreTrainedTokenizerFast that carries the
template and special tokens (the vocabulary is irrelevant for tokenize=False).
transformers' environment: jinja2 ImmutableSandboxedEnvironment with
trim_blocks=True, lstrip_blocks=True, extensions loopcontrols (+ its own
generation tag), keep_trailing_newline=False; globals raise_exception,
strftime_now; filter tojson(ensure_ascii=False, indent=None, separators=None,
sort_keys=False).

Templates that call strftime_now are given a fixed `date_string` in every case
(they only call strftime_now when date_string is undefined); one extra case
without it is recorded with "date_dependent": true.

Re-importing the templates (only needed when changing sources):
    python scripts/goldens/chat_templates.py --import-llamacpp /path/to/llama.cpp/.git
reads them with `git show HEAD:...` from a llama.cpp checkout / mirror.
The SmolLM2 one is taken from tests/fixtures/smollm2/tokenizer/ (i.e. from the
GGUF's tokenizer.chat_template), so run smollm2.py first.

Run: /work/venv/bin/python scripts/goldens/chat_templates.py   (from repo root)
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "chat_templates"

FIXED_DATE = "26 Jul 2024"

# model dir -> (source file in llama.cpp, special tokens of the real model)
LLAMACPP_SOURCES = {
    "qwen2.5-instruct": ("models/templates/Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen/Qwen2.5-7B-Instruct",
                         {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "qwen3": ("models/templates/Qwen-Qwen3-0.6B.jinja", "Qwen/Qwen3-0.6B",
              {"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "llama-3.1-instruct": ("models/templates/meta-llama-Llama-3.1-8B-Instruct.jinja",
                           "meta-llama/Llama-3.1-8B-Instruct",
                           {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "llama-3.2-instruct": ("models/templates/meta-llama-Llama-3.2-3B-Instruct.jinja",
                           "meta-llama/Llama-3.2-3B-Instruct",
                           {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "gemma-2-it": ("models/templates/google-gemma-2-2b-it.jinja", "google/gemma-2-2b-it",
                   {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
                    "unk_token": "<unk>"}),
    "phi-3.5-mini-instruct": ("models/templates/microsoft-Phi-3.5-mini-instruct.jinja",
                              "microsoft/Phi-3.5-mini-instruct",
                              {"bos_token": "<s>", "eos_token": "<|endoftext|>",
                               "pad_token": "<|endoftext|>", "unk_token": "<unk>"}),
    "mistral-nemo-instruct-2407": ("models/templates/mistralai-Mistral-Nemo-Instruct-2407.jinja",
                                   "mistralai/Mistral-Nemo-Instruct-2407",
                                   {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    # embedded as a C string in llama.cpp's test suite (entry named
    # "mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)")
    "mistral-7b-instruct-v0.2": ("tests/test-chat-template.cpp", "mistralai/Mistral-7B-Instruct-v0.2",
                                 {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
}

CASES = [
    {"name": "single_user_gen",
     "messages": [{"role": "user", "content": "Hello! How are you?"}],
     "add_generation_prompt": True},
    {"name": "single_user_no_gen",
     "messages": [{"role": "user", "content": "Hello! How are you?"}],
     "add_generation_prompt": False},
    {"name": "system_user_gen",
     "messages": [{"role": "system", "content": "You are a concise assistant."},
                  {"role": "user", "content": "What is 2+2?"}],
     "add_generation_prompt": True},
    {"name": "multi_turn_gen",
     "messages": [{"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello! How can I help?"},
                  {"role": "user", "content": "Tell me a joke."}],
     "add_generation_prompt": True},
    {"name": "system_multi_turn_no_gen",
     "messages": [{"role": "system", "content": "You are a pirate."},
                  {"role": "user", "content": "Where is the treasure?"},
                  {"role": "assistant", "content": "Arr, buried on the island!"},
                  {"role": "user", "content": "Which island?"},
                  {"role": "assistant", "content": "Skull Island, matey."}],
     "add_generation_prompt": False},
    {"name": "unicode_korean_gen",
     "messages": [{"role": "system", "content": "당신은 친절한 한국어 도우미입니다."},
                  {"role": "user", "content": "한국의 수도는 어디인가요? 🇰🇷 你好"}],
     "add_generation_prompt": True},
    {"name": "whitespace_gen",
     "messages": [{"role": "user", "content": "  leading and trailing spaces  \n"},
                  {"role": "assistant", "content": "\n  answer with whitespace \t\n"},
                  {"role": "user", "content": "\tline1\nline2\n\n"}],
     "add_generation_prompt": True},
    {"name": "non_alternating_gen",
     "messages": [{"role": "user", "content": "first"},
                  {"role": "user", "content": "second"}],
     "add_generation_prompt": True},
    {"name": "assistant_first_no_gen",
     "messages": [{"role": "assistant", "content": "I speak first."},
                  {"role": "user", "content": "OK."}],
     "add_generation_prompt": False},
    {"name": "think_history_gen",
     "messages": [{"role": "user", "content": "What is 3*7?"},
                  {"role": "assistant", "content": "<think>\n3*7 = 21\n</think>\n\n21"},
                  {"role": "user", "content": "And 4*5?"}],
     "add_generation_prompt": True},
    {"name": "enable_thinking_false_gen",
     "messages": [{"role": "user", "content": "Quick question: capital of France?"}],
     "add_generation_prompt": True,
     "kwargs": {"enable_thinking": False}},
    {"name": "empty_content_gen",
     "messages": [{"role": "user", "content": ""}],
     "add_generation_prompt": True},
]


def mistral_v02_from_test_cpp(src: str) -> str:
    key = '"mistralai/Mistral-7B-Instruct-v0.2 (NOTE: Old pre-v1 without a system prompt)"'
    i = src.index(key)
    j = src.index("/* .template_str= */", i) + len("/* .template_str= */")
    line = src[j:src.index("\n", j)].strip().rstrip(",")
    return ast.literal_eval(line)


def import_llamacpp(gitdir: str) -> None:
    def show(path):
        return subprocess.run(["git", "--git-dir", gitdir, "show", f"HEAD:{path}"],
                              check=True, capture_output=True, text=True).stdout
    commit = subprocess.run(["git", "--git-dir", gitdir, "rev-parse", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    for name, (path, model_id, special) in LLAMACPP_SOURCES.items():
        src = show(path)
        tmpl = mistral_v02_from_test_cpp(src) if path.endswith(".cpp") else src
        d = OUT / name
        d.mkdir(parents=True, exist_ok=True)
        cfg = {"model_id": model_id, **{k: v for k, v in special.items()}, "chat_template": tmpl}
        (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n")
        print(f"imported {name} from {path} @ {commit}")


def import_smollm2() -> None:
    src = REPO / "tests" / "fixtures" / "smollm2" / "tokenizer" / "tokenizer_config.json"
    c = json.loads(src.read_text())
    d = OUT / "smollm2"
    d.mkdir(parents=True, exist_ok=True)
    cfg = {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF tokenizer.chat_template)"}
    for k in ("bos_token", "eos_token", "pad_token", "unk_token"):
        if k in c:
            cfg[k] = c[k]
    cfg["chat_template"] = c["chat_template"]
    (d / "tokenizer_config.json").write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n")


def make_tokenizer(cfg: dict) -> PreTrainedTokenizerFast:
    specials = {k: cfg[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                if cfg.get(k) is not None}
    vocab = {"[x]": 0}
    for v in specials.values():
        vocab.setdefault(v, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[x]"))
    return PreTrainedTokenizerFast(tokenizer_object=backend, chat_template=cfg["chat_template"],
                                   **specials)


def render_all(name: str) -> dict:
    cfg = json.loads((OUT / name / "tokenizer_config.json").read_text())
    tok = make_tokenizer(cfg)
    uses_strftime = "strftime_now" in cfg["chat_template"]
    cases = list(CASES)
    if uses_strftime:
        cases.append({"name": "no_date_string_gen",
                      "messages": [{"role": "user", "content": "What day is it?"}],
                      "add_generation_prompt": True, "date_dependent": True})
    out = []
    for c in cases:
        kwargs = dict(c.get("kwargs", {}))
        if uses_strftime and not c.get("date_dependent"):
            kwargs.setdefault("date_string", FIXED_DATE)
        rec = {"name": c["name"], "messages": c["messages"],
               "add_generation_prompt": c["add_generation_prompt"], "kwargs": kwargs}
        if c.get("date_dependent"):
            rec["date_dependent"] = True
        try:
            rec["text"] = tok.apply_chat_template(c["messages"], tokenize=False,
                                                  add_generation_prompt=c["add_generation_prompt"],
                                                  **kwargs)
        except Exception as e:  # jinja2 TemplateError from raise_exception, etc.
            rec["error"] = True
            rec["message"] = f"{type(e).__name__}: {e}"
        out.append(rec)
    return {
        "model": name,
        "model_id": cfg.get("model_id"),
        "transformers_version": transformers.__version__,
        "special_tokens": {k: cfg.get(k) for k in ("bos_token", "eos_token", "pad_token", "unk_token")
                           if k in cfg},
        "uses_strftime_now": uses_strftime,
        "fixed_date_string": FIXED_DATE if uses_strftime else None,
        "notes": "text = tokenizer.apply_chat_template(messages, tokenize=False, "
                 "add_generation_prompt=..., **kwargs); special tokens from tokenizer_config.json "
                 "are available to the template as bos_token/eos_token/pad_token/unk_token. "
                 "error=true means the template raised (raise_exception or a jinja error).",
        "cases": out,
    }


def main(argv) -> None:
    if len(argv) >= 2 and argv[0] == "--import-llamacpp":
        import_llamacpp(argv[1])
    import_smollm2()
    names = sorted(p.name for p in OUT.iterdir() if (p / "tokenizer_config.json").exists())
    for name in names:
        g = render_all(name)
        (OUT / name / "golden.json").write_text(json.dumps(g, ensure_ascii=False, indent=1) + "\n")
        errs = [c["name"] for c in g["cases"] if c.get("error")]
        print(f"{name}: {len(g['cases'])} cases, errors: {errs}")


if __name__ == "__main__":
    main(sys.argv[1:])
