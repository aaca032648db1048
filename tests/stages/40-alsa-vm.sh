#!/usr/bin/env bash
# The ALSA sequencer bridge on a real kernel sequencer, in throw-away QEMU VMs (tests/vm/):
# the runner's smoke test, the sequencer seam (src/seq) and the daemons end to end. run.sh
# installs what it needs (build-image.sh); any failure fails the stage, nothing is skipped.
set -uo pipefail
cd "$(dirname "$0")/../.."
failed=()
for t in smoke seq_probe bridge rawmidi midi2; do
  echo "--- tests/vm/$t.sh"
  start=$SECONDS
  if bash "tests/vm/$t.sh"; then
    echo "--- ok: $t ($((SECONDS - start)) s)"
  else
    echo "--- FAILED: $t ($((SECONDS - start)) s)"
    failed+=("$t")
  fi
done
[ ${#failed[@]} -eq 0 ] || { echo "alsa-vm: failed: ${failed[*]}"; exit 1; }
