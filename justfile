# Convenience recipes. Nothing here is required: every recipe is one plain command you can run
# without `just` (the README's two commands do not use it).

# the README demo: a planted bug (embeddings scaled by 1/sqrt(hidden)) found at model.embed_tokens
demo:
    cargo run --release -q -p divergence-cli -- diff fixtures/demo/ours.npz fixtures/demo/ref.npz

# every test, as CI runs it
test:
    bash scripts/test.sh

# Rust tests only (no Python venv)
test-rust:
    cargo test --workspace

# regenerate the committed fixtures with real transformers (CPU)
fixtures:
    bash scripts/setup_venv.sh
    .venv/bin/python scripts/make_fixtures.py

# regenerate the fixtures into a temp dir and compare with the committed ones (what CI does)
fixtures-check:
    bash scripts/setup_venv.sh
    .venv/bin/python scripts/make_fixtures.py --check

# the diff speed benchmark vs cat and a numpy script (docs/performance.md)
bench:
    bash scripts/setup_venv.sh
    bash scripts/bench/run_bench.sh

# build the CUDA binary for the GPU machine (see ../shared/gpu/README.md)
cuda:
    ../shared/gpu/build_cuda.sh crates/divergence-cli --release --features cuda
    mkdir -p .gpu && strip -o .gpu/divergence target/release/divergence && gzip -f .gpu/divergence
