#!/usr/bin/env bash
# Builds every cargo-fuzz target listed in tests/fuzz/Cargo.toml and runs each for FUZZ_SECONDS
# (default 10). Fails on any crash, leak or timeout libFuzzer reports, or on a build failure.
# Installs the nightly toolchain and cargo-fuzz when they are missing.
set -euo pipefail

seconds=${FUZZ_SECONDS:-10}
cd "$(dirname "$0")"

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# This folder, not cargo-fuzz's default `fuzz/` beside the workspace root.
fuzz() { cargo +nightly fuzz "$1" --fuzz-dir "$PWD" "${@:2}"; }

# The [[bin]] names in Cargo.toml are the targets.
mapfile -t targets < <(fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz.sh: no targets in tests/fuzz/Cargo.toml" >&2
    exit 1
fi

fuzz build
failed=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "corpus/$target"
    if ! fuzz run "$target" -- -max_total_time="$seconds" -timeout=10 \
        >"target/fuzz-$target.log" 2>&1; then
        tail -n 40 "target/fuzz-$target.log" >&2
        failed+=("$target")
    else
        grep -E '^Done [0-9]+ runs' "target/fuzz-$target.log" || true
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz.sh: FAILED: ${failed[*]} (crash inputs in tests/fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets ok"
