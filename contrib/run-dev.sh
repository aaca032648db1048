#!/usr/bin/env bash
# Builds rtpmidid on a fresh Debian machine (installing the build dependencies when missing)
# and runs it in the foreground with the given arguments, e.g. `bash contrib/run-dev.sh -v`.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
for p in pkg-config libasound2-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The sequencer device appears when its kernel module is loaded (best effort: a container or
# a kernel without sound has neither, and rtpmidid then says so; --no-alsa runs without it).
[ -e /dev/snd/seq ] || modprobe snd-seq 2>/dev/null || true
cargo build --release --quiet
exec target/release/rtpmidid "$@"
