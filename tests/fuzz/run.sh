#!/usr/bin/env bash
# Builds every cargo-fuzz target listed in tests/fuzz/Cargo.toml and runs each for FUZZ_SECONDS
# (default 10). Fails on any crash, leak or timeout libFuzzer reports, or on a build failure.
# Installs the nightly toolchain and cargo-fuzz when they are missing.
set -euo pipefail

seconds=${FUZZ_SECONDS:-10}
cd "$(dirname "$0")/../.."
dir=tests/fuzz

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The [[bin]] names in Cargo.toml are the targets.
mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir "$dir")
if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz: no targets in tests/fuzz/Cargo.toml" >&2
    exit 1
fi

cargo +nightly fuzz build --fuzz-dir "$dir"
# Targets that need a file (the config reader takes a path) write it under TMPDIR: this run's
# own, removed at the end.
TMPDIR=$(mktemp -d -t rtpmidid-fuzz.XXXXXX)
export TMPDIR
trap 'rm -rf "$TMPDIR"' EXIT
failed=()
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s"
    mkdir -p "$dir/corpus/$target"
    log=$dir/target/fuzz-$target.log
    if ! cargo +nightly fuzz run --fuzz-dir "$dir" "$target" -- -max_total_time="$seconds" \
        -timeout=10 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        failed+=("$target")
    else
        grep -E '^Done [0-9]+ runs' "$log" || true
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (crash inputs in tests/fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ok"
