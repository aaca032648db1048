#!/usr/bin/env bash
# The benchmark harness (tests/bench) still works: every row at tiny sizes (--quick), which
# fails only if a row produced no number; the figures are not judged (BENCHMARKS.md holds a
# full run). The harness measures the release daemon, target/release/rtpmidid.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q
cargo run --release -q --manifest-path tests/bench/Cargo.toml -- --quick
