#!/usr/bin/env bash
# rtpmidid against third-party RTP-MIDI peers (pymidi, node-rtpmidi) on loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/peers/setup.sh
tests/peers/venv/bin/python -c "import pytest" 2>/dev/null \
  || tests/peers/venv/bin/pip install -q "pytest==8.*"
cargo build -q
tests/peers/venv/bin/python tests/peers/selftest.py
tests/peers/venv/bin/python -m pytest -q -p no:cacheprovider tests/e2e
