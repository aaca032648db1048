#!/usr/bin/env bash
# The soak (not part of the tests: it takes minutes): one hub daemon on loopback under peers
# joining and leaving, note streams, floods and configuration reloads; memory, descriptors and
# SIGTERM checked. SOAK_MINUTES (default 5), SOAK_PEERS (default 8). See soak.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q
exec python3 tests/soak/soak.py --bin target/debug/rtpmidid \
    --minutes "${SOAK_MINUTES:-5}" --peers "${SOAK_PEERS:-8}"
