#!/usr/bin/env bash
# Memory and speed of LoRA training on quantised bases (issue 13's table): SmolLM2-135M, LoRA r=8 on
# every projection, batches 4 x SEQ, on the CPU. Each storage runs in its own process (peak RSS is the
# process's), back to back, then one table with ratios against the f32 base.
#
#   scripts/bench/qlora.sh      # needs target/release/lf and the SmolLM2 GGUF (scripts/fetch-models.sh)
# Environment: LF (the lf binary), THREADS (default 2), SEQ (default 256),
# MODEL (default .models/SmolLM2-135M-Instruct.Q4_1.gguf), PYTHON (for the table; default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
LF=${LF:-target/release/lf}
PYTHON=${PYTHON:-python3}
THREADS=${THREADS:-2}
SEQ=${SEQ:-256}
MODEL=${MODEL:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -x "$LF" ] || { echo "error: $LF is not built; hint: cargo build --release" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "error: $MODEL is missing; hint: scripts/fetch-models.sh" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export RAYON_NUM_THREADS=$THREADS
for q in none nf4 int8 gguf; do
  echo "-- lf bench train --quantization $q" >&2
  if [ "$q" = gguf ]; then
    "$LF" bench train --size "$SEQ" --model "$MODEL" > "$out/$q.json"
  else
    "$LF" bench train --size "$SEQ" --model "$MODEL" --quantization "$q" > "$out/$q.json"
  fi
done
"$PYTHON" - "$out" "$THREADS" "$SEQ" <<'PY'
import json, os, platform, sys
out, threads, seq = sys.argv[1:4]
rows = [("f32 base (dequantised)", "none"), ("NF4 base (double quantisation)", "nf4"),
        ("int8 base (row-wise)", "int8"), ("GGUF Q4_1 base kept in its blocks", "gguf")]
r = {k: json.load(open(os.path.join(out, k + ".json"))) for _, k in rows}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
print(f"\nCPU: {cpu}; {threads} threads; SmolLM2-135M LoRA r=8 all linear; batches 4 x {seq}; f32 compute\n")
print("| base | projections | tok/s | vs f32 | peak RSS | vs f32 |")
print("|---|---|---|---|---|---|")
ref = r["none"]
for label, k in rows:
    x = r[k]
    print(f"| {label} | {x['projection_mib']:,.0f} MiB | {x['tokens_per_s']:,.1f} | "
          f"{x['tokens_per_s'] / ref['tokens_per_s']:.2f}x | {x['peak_rss_mib']:,.0f} MiB | "
          f"{x['peak_rss_mib'] / ref['peak_rss_mib']:.0%} |")
PY
