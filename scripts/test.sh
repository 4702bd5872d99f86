#!/usr/bin/env bash
# Runs every test of the project: the README's test command and what CI runs (.ci/run).
#
#   bash scripts/test.sh
#
# 0. Sets up .venv (torch + transformers from PyPI, see scripts/setup_venv.sh): the Rust tests
#    also load what our writer wrote with real numpy/safetensors.
# 1. Rust: format check, clippy (warnings are errors), the API docs (warnings are errors), the
#    whole workspace's tests (unit, property, snapshot, CLI and the candle-vs-transformers
#    integration tests on the committed fixtures).
# 2. Python: the exporter's pytest suite against real transformers, with the bad-input suite
#    (tests/python/test_bad_inputs.py: 418 damaged or hostile inputs given to the binary, exit
#    code, stderr, JSON, peak RSS and time checked; docs/bad-inputs.md) and the held-out models
#    (tests/python/test_heldout.py), then every committed
#    fixture regenerated with real transformers and checked against the committed files.
# 3. The worked CI example of docs/ci.md, and the quoted outputs of docs/pitfalls.md
#    (scripts/doc_outputs.py --check).
set -euo pipefail
cd "$(dirname "$0")/.."
section() { printf '\n=== %s\n' "$*"; }
# A one-off build needs no incremental state (1.5 GiB of target/debug; the README's disk peak,
# 6.8 GiB, is without it, as .ci/run builds). Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

section "python venv"
bash scripts/setup_venv.sh

section "cargo fmt --check"
cargo fmt --all -- --check

# clippy checks every target (tests included) with the same features as the test build; its
# dependency pass is a `check` (metadata only, no code generation), which no later build can
# reuse, so candle is compiled once for it and once for the tests.
section "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The API docs build without warnings (a broken or private intra-doc link is an error). After
# clippy its dependencies' metadata is built: this documents the workspace's crates only.
section "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

# `cargo test` builds every binary too (target/debug/divergence, used below): no separate
# `cargo build`. That one compiled candle a second time: without the dev-dependencies, features
# of crates under candle unify differently (serde_json, getrandom, once_cell), so nothing of
# the test build's candle was reused.
section "cargo test"
cargo test --workspace --locked

# The binary cargo test built: under $CARGO_TARGET_DIR when it is set (a newcomer's run found
# that a stale target/debug would be tested instead, or the bad-input suite skipped).
BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/divergence"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac

section "pytest (reference exporter, real transformers; bad-input suite)"
DIVERGENCE_BIN="$BIN" .venv/bin/python -m pytest tests/python -q

section "fixtures: regenerate with real transformers and check"
DIVERGENCE_BIN="$BIN" .venv/bin/python scripts/make_fixtures.py --check

section "docs/ci.md example"
bash docs/ci-example.sh "$BIN"

section "docs/pitfalls.md outputs"
python3 scripts/doc_outputs.py --check --bin "$BIN"
