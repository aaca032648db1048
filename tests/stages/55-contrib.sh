#!/usr/bin/env bash
# contrib/: the systemd unit passes `systemd-analyze verify` without a single warning, and the
# sysvinit script parses. The example configuration is
# parsed by `cargo test` (config::tests::the_example_file_parses).
set -euo pipefail
cd "$(dirname "$0")/../.."
sh -n contrib/init.d/rtpmidid
echo "init.d script: syntax ok"
if ! command -v systemd-analyze >/dev/null; then
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
cargo build -q --bin rtpmidid 2>/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# verify checks that ExecStart exists: point it at the binary just built.
sed "s#/usr/local/bin/rtpmidid#$PWD/target/debug/rtpmidid#" contrib/rtpmidid.service \
  >"$tmp/rtpmidid.service"
out=$(systemd-analyze verify "$tmp/rtpmidid.service" 2>&1) || { echo "$out"; exit 1; }
if [ -n "$out" ]; then
  echo "$out"
  exit 1
fi
echo "rtpmidid.service: systemd-analyze verify ok"
