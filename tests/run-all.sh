#!/usr/bin/env bash
# Every test of rtpmidid, from a fresh machine: installs what it needs, then runs each stage and
# ends with one line "N passed, M failed". Exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

bash tests/setup-deps.sh || { echo "setup failed"; echo "0 passed, 1 failed"; exit 1; }

# setup-deps.sh installed tshark and tmux: the Wireshark checks and the terminal test of
# `ctl top` inside `cargo test` must not skip.
export RTPMIDID_REQUIRE_TSHARK=1 RTPMIDID_REQUIRE_TMUX=1

passed=0; failed=0; failures=()
stage() {
  local name=$1; shift
  echo "=== stage: $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1)); echo "=== ok: $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); failures+=("$name"); echo "=== FAILED: $name ($((SECONDS - start)) s)"
  fi
}

stage fmt cargo fmt --all -- --check
stage clippy cargo clippy --workspace --all-targets -q -- -D warnings
stage unit-and-integration cargo test --workspace -q --no-fail-fast
for script in tests/stages/*.sh; do
  stage "$(basename "$script" .sh)" bash "$script"
done

[ ${#failures[@]} -eq 0 ] || echo "failed stages: ${failures[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
