#!/usr/bin/env bash
# The protocol crate as a library others embed: its docs build without a warning (broken links
# included), and `cargo package` makes a crate that builds on its own, outside the workspace
# (no path dependency, every file it needs inside). The crate docs' example runs with
# `cargo test`, and tests/library_example.rs plays its send_note example to the daemon.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUSTDOCFLAGS="-D warnings" cargo doc -q -p rtpmidid-protocol --no-deps
echo "cargo doc: no warnings"
# --allow-dirty: a work tree with uncommitted changes is checked as it is.
cargo package -q -p rtpmidid-protocol --allow-dirty
echo "cargo package: built and verified"
