#!/usr/bin/env bash
# Creates (or updates) the Python venv of the reference side in .venv: torch + transformers from
# PyPI, pinned in scripts/requirements.txt. Idempotent: does nothing when the venv already has
# exactly these requirements (a stamp file holds the requirements it was built from). pip keeps
# no cache: torch's wheels (with their CUDA libraries, ~3 GiB) would otherwise sit twice on disk.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
REQ=scripts/requirements.txt
STAMP="$VENV/.divergence-requirements"
if [ -f "$STAMP" ] && cmp -s "$REQ" "$STAMP"; then
  exit 0
fi
echo "setting up $VENV from $REQ (torch + transformers, a few minutes)" >&2
t0=$(date +%s)
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir -r "$REQ"
cp "$REQ" "$STAMP"
echo "venv ready in $(( $(date +%s) - t0 )) s" >&2
