#!/usr/bin/env bash
# The worked example of docs/ci.md, run by scripts/test.sh so it cannot rot.
#
#   bash docs/ci-example.sh [path/to/divergence]
#
# A CI step that gates on `divergence diff`: the exit code decides the job, the Markdown report
# goes to the step summary, the JSON report is kept as an artifact.
set -uo pipefail
cd "$(dirname "$0")/.."
DIVERGENCE=${1:-divergence}
ARTIFACTS=$(mktemp -d)
SUMMARY=${GITHUB_STEP_SUMMARY:-$ARTIFACTS/summary.md}

gate() { # name, ours, ref, expected exit code
  local name=$1 ours=$2 ref=$3 want=$4
  "$DIVERGENCE" diff "$ours" "$ref" --format markdown \
      --json-out "$ARTIFACTS/$name.json" >> "$SUMMARY"
  local code=$?
  if [ "$code" -ne "$want" ]; then
    echo "ci-example: $name: exit $code, expected $want" >&2
    exit 1
  fi
  echo "ci-example: $name: exit $code as expected ($ARTIFACTS/$name.json)"
}

# A port that matches: the same tiny Qwen3 in transformers with sdpa attention against eager.
gate sdpa-vs-eager fixtures/ref/tiny-qwen3.f32.sdpa.npz fixtures/ref/tiny-qwen3.f32.eager.npz 0
# A port with the circulating embedding-scale bug: the job must fail (exit 1).
gate planted-bug fixtures/demo/ours.npz fixtures/demo/ref.npz 1
# The JSON artifact names the op.
python3 - "$ARTIFACTS/planted-bug.json" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
first = report["first_divergence"]
assert first and first["name"] == "model.embed_tokens", first
print(f"ci-example: first divergence in the artifact: {first['name']}")
PY
# A missing file is an error (exit 2), not a pass.
"$DIVERGENCE" diff does-not-exist.npz fixtures/demo/ref.npz --format json > /dev/null 2>&1
[ $? -eq 2 ] || { echo "ci-example: missing file did not exit 2" >&2; exit 1; }
echo "ci-example: ok"
