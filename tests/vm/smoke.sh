#!/bin/sh
# Smoke test of the VM runner: the guest has a kernel sequencer with "Midi Through", and a MIDI
# file played into 14:0 with aplaymidi arrives at aseqdump, same notes in the same order.
#
# Usage: tests/vm/smoke.sh          (on the host: writes the .mid, boots the VM, runs --guest)
#        smoke.sh --guest           (inside the VM, in the folder holding notes.mid)
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # Format 0, one track, 96 ticks a quarter (120 bpm: 1 tick = 5.2 ms): C4 E4 G4, each on
    # for 12 ticks, 24 ticks apart, then a note with running status and a zero-velocity off.
    PYTHONPATH=$here python3 - "$tmp/notes.mid" <<'EOF'
import sys
from smf import write_smf
write_smf(sys.argv[1], bytes([
    0x00, 0x90, 60, 100,  12, 0x80, 60, 0,
    12,   0x90, 64, 100,  12, 0x80, 64, 0,
    12,   0x90, 67, 100,  12, 0x80, 67, 0,
    12,   0x90, 72, 90,   12, 72, 0,
]))
EOF
    "$here/run.sh" --timeout 60 --copy "$0:smoke.sh" --copy "$tmp/notes.mid:notes.mid" \
        -- /bin/sh smoke.sh --guest
    # The runner passes the command's output and exit status through, and fails a hung guest.
    rc=0
    out=$("$here/run.sh" -- sh -c 'echo "it'"'"'s out"; exit 7') || rc=$?
    [ "$rc" = 7 ] && [ "$out" = "it's out" ] || { echo "smoke: FAIL: got '$out', status $rc"; exit 1; }
    rc=0
    "$here/run.sh" --timeout 4 -- sleep 60 2>/dev/null || rc=$?
    [ "$rc" = 124 ] || { echo "smoke: FAIL: a hung guest gave status $rc, not 124"; exit 1; }
    echo "smoke: exit status, output and timeout pass through the runner"
    echo "smoke: PASS"
    exit 0
fi

fail() { echo "smoke: FAIL: $*"; exit 1; }

aconnect -l >list.txt
grep -q "^client 14: 'Midi Through'" list.txt || { cat list.txt; fail "no Midi Through client"; }
echo "smoke: Midi Through is client 14"

aseqdump -p 14:0 >dump.txt 2>&1 &
dump=$!
# aseqdump is ready once its subscription to 14:0 shows; wait for that, bounded.
i=0
until aconnect -l | grep -A3 "^client 14:" | grep -q 'Connecting To:'; do
    i=$((i + 1))
    [ $i -le 100 ] || fail "aseqdump did not subscribe to 14:0"
    sleep 0.05
done

# aplaymidi returns when its queue has drained, so every event has been delivered by then.
aplaymidi -p 14:0 notes.mid || fail "aplaymidi failed"
kill -TERM $dump
wait $dump || true

# aseqdump prints a zero-velocity note-on as "Note off" without a velocity.
sed -n 's/^ *14:0 *//p' dump.txt | sed 's/  */ /g' >got.txt
cat >want.txt <<'EOF'
Note on 0, note 60, velocity 100
Note off 0, note 60, velocity 0
Note on 0, note 64, velocity 100
Note off 0, note 64, velocity 0
Note on 0, note 67, velocity 100
Note off 0, note 67, velocity 0
Note on 0, note 72, velocity 90
Note off 0, note 72
EOF
if ! cmp -s got.txt want.txt; then
    echo "--- aseqdump output:"
    cat dump.txt
    fail "events differ from the file's"
fi
echo "smoke: 8 note events arrived in order"
echo "smoke: guest checks pass"
