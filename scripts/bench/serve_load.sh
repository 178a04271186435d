#!/usr/bin/env bash
# A bounded load test of `lf serve` on loopback: CLIENTS concurrent clients send REQUESTS chat
# requests each (greedy, MAX_TOKENS new tokens, a different question per request) to a real server
# with a real HTTP client (curl). Every answer must arrive (HTTP 200) and equal the answer the same
# request gets alone, so none is mixed with another's. Prints throughput and p50/p99 latency.
#
#   scripts/bench/serve_load.sh    # needs target/release/lf and the SmolLM2 GGUF (scripts/fetch-models.sh)
# Environment: LF (the lf binary), MODEL (default .models/SmolLM2-135M-Instruct.Q4_1.gguf),
# CLIENTS (16), REQUESTS (4), MAX_TOKENS (16), THREADS (2), PYTHON (for the table; python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
LF=${LF:-target/release/lf}
PYTHON=${PYTHON:-python3}
MODEL=${MODEL:-.models/SmolLM2-135M-Instruct.Q4_1.gguf}
CLIENTS=${CLIENTS:-16}
REQUESTS=${REQUESTS:-4}
MAX_TOKENS=${MAX_TOKENS:-16}
export RAYON_NUM_THREADS=${THREADS:-2}
[ -x "$LF" ] || { echo "error: $LF is not built; hint: cargo build --release" >&2; exit 2; }
[ -f "$MODEL" ] || { echo "error: $MODEL is missing; hint: scripts/fetch-models.sh" >&2; exit 2; }
out=$(mktemp -d)
port=$((20000 + RANDOM % 20000))
"$LF" serve --model "$MODEL" --served-model-name m --port "$port" --max-queue $((CLIENTS * REQUESTS)) \
  2> "$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$port/health" > /dev/null && break
  sleep 0.2
done

ask() { # ask ID OUTFILE: one request; writes the answer and "status seconds" lines
  local body
  body=$(printf '{"model":"m","messages":[{"role":"user","content":"Question %s: name a colour and a number."}],"temperature":0,"max_tokens":%s}' "$1" "$MAX_TOKENS")
  curl -s -o "$2.json" -w '%{http_code} %{time_total}\n' -H 'content-type: application/json' \
    -d "$body" "http://127.0.0.1:$port/v1/chat/completions" > "$2.time"
}
export -f ask
export port MAX_TOKENS

ids=$(seq 0 $((CLIENTS * REQUESTS - 1)))
for i in $ids; do ask "$i" "$out/alone-$i"; done
start=$(date +%s.%N)
# CLIENTS parallel clients, each sending its REQUESTS requests one after another.
seq 0 $((CLIENTS - 1)) | xargs -P "$CLIENTS" -I{} bash -c \
  'for r in $(seq 0 '"$((REQUESTS - 1))"'); do i=$(( {} * '"$REQUESTS"' + r )); ask $i '"$out"'/load-$i; done'
end=$(date +%s.%N)

"$PYTHON" - "$out" "$CLIENTS" "$REQUESTS" "$start" "$end" "$MODEL" <<'PY'
import json, pathlib, sys
out, clients, requests, start, end, model = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
n = clients * requests
lat, bad, tokens = [], 0, 0
for i in range(n):
    status, secs = (out / f"load-{i}.time").read_text().split()
    alone = json.loads((out / f"alone-{i}.json").read_text())
    got = json.loads((out / f"load-{i}.json").read_text())
    if status != "200" or got["choices"][0]["message"]["content"] != alone["choices"][0]["message"]["content"]:
        bad += 1
        print(f"request {i}: status {status}, answer differs from the one it gets alone")
    tokens += got["usage"]["completion_tokens"]
    lat.append(float(secs))
lat.sort()
pct = lambda q: lat[round((len(lat) - 1) * q)]
wall = end - start
print(f"{model}: {n} requests from {clients} clients in {wall:.2f} s: {n / wall:.2f} requests/s, "
      f"{tokens / wall:.1f} generated tokens/s, latency p50 {pct(0.5):.2f} s, p99 {pct(0.99):.2f} s; "
      f"{n - bad}/{n} answers equal to the request's answer alone")
sys.exit(1 if bad else 0)
PY
