#!/usr/bin/env bash
# CPU speed of lf against transformers (+ peft) and, when llama-cpp-python is installed, llama.cpp: each
# case runs back to back on this machine with the same shapes and thread count, then one table of rates
# and ratios (lf / reference; above 1.0 lf is faster) is printed. Issue 12's table.
#
#   scripts/bench/cpu.sh            # needs target/release/lf (cargo build --release) and the SmolLM2 GGUF
#                                   # (scripts/fetch-models.sh); PYTHON must have torch, transformers, peft, gguf
# Environment: LF (the lf binary), PYTHON (default python3), THREADS (default 2), SEQ (default 256),
# MODEL (default .models/SmolLM2-135M-Instruct.Q4_1.gguf), QUICKSTART=0 skips the end-to-end quickstart run.
set -euo pipefail
cd "$(dirname "$0")/../.."
LF=${LF:-target/release/lf}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
SEQ=${SEQ:-256}
MODEL=${MODEL:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -x "$LF" ] || { echo "error: $LF is not built; hint: cargo build --release" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "error: $MODEL is missing; hint: scripts/fetch-models.sh" >&2; exit 2; }
"$PYTHON" -c 'import torch, transformers, peft, gguf' 2>/dev/null \
  || { echo "error: $PYTHON lacks torch/transformers/peft/gguf; hint: pip install torch transformers peft gguf" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export RAYON_NUM_THREADS=$THREADS OMP_NUM_THREADS=$THREADS LF_MODELS_DIR=$(dirname "$MODEL")
say() { echo "-- $*" >&2; }

say "lf: train, tiny (full)";        "$LF" bench train --size "$SEQ" > "$out/lf_tiny.json"
say "torch: train, tiny (full)";     "$PYTHON" scripts/bench/train_hf.py tiny --seq "$SEQ" --threads "$THREADS" > "$out/hf_tiny.json"
say "lf: train, SmolLM2 LoRA";       "$LF" bench train --size "$SEQ" --model "$MODEL" > "$out/lf_lora.json"
say "torch: train, SmolLM2 LoRA";    "$PYTHON" scripts/bench/train_hf.py lora --model "$MODEL" --seq "$SEQ" --threads "$THREADS" > "$out/hf_lora.json"
say "lf: generate";                  "$LF" bench generate --model "$MODEL" > "$out/lf_gen.json"
say "torch: generate";               "$PYTHON" scripts/bench/generate_hf.py --threads "$THREADS" > "$out/hf_gen.json"
if "$PYTHON" -c 'import llama_cpp' 2>/dev/null; then
  say "llama.cpp: generate";         "$PYTHON" scripts/bench/generate_llamacpp.py "$MODEL" --threads "$THREADS" > "$out/cpp_gen.json"
else
  say "llama.cpp: skipped (llama-cpp-python is not installed; pip install llama-cpp-python builds it in ~4 min)"
fi
if [ "${QUICKSTART:-1}" != 0 ]; then
  say "lf: quickstart end to end (fresh store)"
  q=$(mktemp -d)
  start=$(date +%s%N)
  (cd "$q" && LF_STORE="$q/.lf" "$OLDPWD/$LF" run -q > /dev/null)
  echo "{\"seconds\": $(( ($(date +%s%N) - start) / 1000000 )).0e-3}" > "$out/quickstart.json"
  rm -rf "$q"
fi

"$PYTHON" - "$out" "$THREADS" "$SEQ" <<'PY'
import json, os, platform, sys
out, threads, seq = sys.argv[1], sys.argv[2], sys.argv[3]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
lf_tiny, hf_tiny, lf_lora, hf_lora = load("lf_tiny"), load("hf_tiny"), load("lf_lora"), load("hf_lora")
lf_gen, hf_gen, cpp_gen, quick = load("lf_gen"), load("hf_gen"), load("cpp_gen"), load("quickstart")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"\nCPU: {cpu}; {threads} threads; train batches 4 x {seq}; f32\n")
print("| case | lf | transformers | lf / transformers | llama.cpp | lf / llama.cpp |")
print("|---|---|---|---|---|---|")
def row(case, lf, hf, cpp=None, unit="tok/s", higher_is_better=True):
    ratio = lambda a, b: (a / b if higher_is_better else b / a) if a and b else None
    f = lambda v: "-" if v is None else f"{v:,.1f} {unit}"
    r = lambda v: "-" if v is None else f"{v:.2f}x"
    cpp_cell = f(cpp) if cpp_gen else "not installed"
    print(f"| {case} | {f(lf)} | {f(hf)} | {r(ratio(lf, hf))} | {cpp_cell} | {r(ratio(lf, cpp))} |")
row("quickstart tiny Llama, full", lf_tiny["tokens_per_s"], hf_tiny["tokens_per_s"])
row("SmolLM2-135M, LoRA r8 all-linear", lf_lora["tokens_per_s"], hf_lora["tokens_per_s"])
row("SmolLM2-135M LoRA, peak RSS", lf_lora["peak_rss_mib"], hf_lora["peak_rss_mib"], unit="MiB", higher_is_better=False)
row("SmolLM2-135M prefill, 128 tokens", lf_gen["prefill_tokens_per_s"], hf_gen["prefill_tokens_per_s"],
    cpp_gen and cpp_gen["prefill_tokens_per_s"])
row("SmolLM2-135M decode", lf_gen["decode_tokens_per_s"], hf_gen["decode_tokens_per_s"],
    cpp_gen and cpp_gen["decode_tokens_per_s"])
if quick:
    print(f"\nquickstart end to end (lf run, fresh store): {quick['seconds']:.1f} s (target < 40 s)")
print("\nratios: above 1.00x lf is faster (for memory: lf uses less)")
PY
