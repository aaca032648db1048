#!/bin/sh
# The sequencer seam on a real kernel sequencer: seq_probe(.rs) echoes what arrives on its
# port; aplaymidi plays a note-on, a CC, a pitch bend, a program change, a 1000-byte SysEx and
# a note-off into it, aseqdump records what comes back out, and both ends must match the file.
# The probe must also see the whole SysEx as one message and both subscriptions with names.
# Then a second probe sends a 100 KiB SysEx to aseqdump, which must get it all (paced output:
# aseqdump's input FIFO holds only about 18 chunks). First of all, the unit tests of src/seq
# run in the guest with the ones that need a kernel sequencer (--include-ignored), and so does
# the check that reading MIDI from the kernel allocates nothing (tests/steady_state_alloc.rs).
#
# Usage: tests/vm/seq_probe.sh      (on the host: builds the probe, writes the .mid, boots)
#        seq_probe.sh --guest       (inside the VM, next to seq_probe and probe.mid)
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    repo=$(cd "$here/../.." && pwd)
    (cd "$repo" && cargo build -q --example seq_probe)
    probe=${CARGO_TARGET_DIR:-$repo/target}/debug/examples/seq_probe
    test_binary() { # NAME CARGO-TEST-ARGS...: prints the test executable of target NAME
        name=$1
        shift
        (cd "$repo" && cargo test -q "$@" --no-run --message-format=json) | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m["profile"]["test"]:
        print(m["executable"])' "$name"
    }
    unit=$(test_binary seq_probe --example seq_probe)
    [ -x "$unit" ] || { echo "seq_probe: no unit test binary" >&2; exit 1; }
    alloc=$(test_binary steady_state_alloc --test steady_state_alloc)
    [ -x "$alloc" ] || { echo "seq_probe: no steady_state_alloc test binary" >&2; exit 1; }
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    PYTHONPATH=$here python3 - "$tmp" <<'EOF'
import sys
from smf import at_tick_zero, sysex, write_hex, write_smf
out = sys.argv[1]
sysex1000 = bytes([0xF0]) + bytes(i % 128 for i in range(998)) + bytes([0xF7])
write_smf(out + "/probe.mid", at_tick_zero([
    bytes([0x90, 0x3C, 0x64]),                        # note on, C4, velocity 100
    bytes([0xB0, 0x07, 0x64]),                        # CC 7 = 100
    bytes([0xE0, 0x00, 0x50]),                        # pitch bend +2048
    bytes([0xC0, 0x05]),                              # program 5
    sysex1000,                                        # 1000 bytes on the wire
    bytes([0x80, 0x3C, 0x00]),                        # note off, right behind the SysEx
]))
write_hex(out + "/sysex.hex", [sysex1000])
write_hex(out + "/big.hex", [sysex(100 * 1024)])     # what seq_probe --sysex sends
EOF
    exec "$here/run.sh" --timeout 90 --copy "$0:seq_probe.sh" --copy "$probe:seq_probe" --copy "$unit:unit_tests" --copy "$alloc:alloc_tests" \
        --copy "$tmp/probe.mid:probe.mid" --copy "$tmp/sysex.hex:sysex.hex" --copy "$tmp/big.hex:big.hex" \
        -- /bin/sh seq_probe.sh --guest
fi

fail() {
    echo "seq_probe: FAIL: $*"
    for f in probe.log dump.txt probe2.log; do [ -f $f ] && { echo "--- $f"; cut -c1-200 $f; }; done
    [ -f dump2.txt ] && echo "--- dump2.txt: $(grep -c 'System exclusive' dump2.txt) SysEx events"
    exit 1
}
# Seconds since boot, with fractions (busybox date has no %N).
now() { cut -d' ' -f1 /proc/uptime; }
# Polls COMMAND until it succeeds; fails after 15 s.
wait_until() { # WHAT COMMAND...
    what=$1
    shift
    deadline=$(awk -v t="$(now)" 'BEGIN { print t + 15 }')
    until "$@"; do
        awk -v t="$(now)" -v d="$deadline" 'BEGIN { exit !(t > d) }' && fail "timed out waiting for $what"
        sleep 0.05
    done
}
wait_for() { wait_until "$3" grep -qs "$2" "$1"; } # FILE PATTERN WHAT

./unit_tests --include-ignored -q >unit.log 2>&1 || { cat unit.log; fail "unit tests"; }
echo "seq_probe: $(grep 'test result' unit.log)"
./alloc_tests --include-ignored --exact --nocapture midi_from_the_kernel_sequencer_does_not_allocate \
    >alloc.log 2>&1 || { cat alloc.log; fail "no steady state without allocations"; }
echo "seq_probe: $(grep -o '[0-9]* events from the kernel.*' alloc.log)"

./seq_probe --echo >probe.log 2>&1 &
wait_for probe.log '^ready ' "the probe to start"
addr=$(sed -n 's/^ready //p' probe.log)
echo "seq_probe: probe at $addr"

aseqdump -p "$addr" >dump.txt 2>&1 &
dump=$!
wait_for probe.log "^subscribed 0 [0-9:]* to-peer client 'aseqdump'" "aseqdump's subscription"
aplaymidi -p "$addr" probe.mid || fail "aplaymidi failed"
wait_for dump.txt "Note off" "the echoed note-off"
wait_for probe.log "^unsubscribed 0 [0-9:]* from-peer" "aplaymidi's unsubscription"
kill $dump
wait $dump || true

# What the probe received: whole messages, the SysEx as one.
for m in '90 3C 64' 'B0 07 64' 'E0 00 50' 'C0 05' '80 3C 00'; do
    grep -q "^midi [0-9:]* len [0-9]* $m\$" probe.log || fail "probe did not get $m"
done
grep -q "^subscribed 0 [0-9:]* from-peer client 'aplaymidi' port 'aplaymidi'" probe.log ||
    fail "no named subscription from aplaymidi"
sed -n 's/^midi [0-9:]* len 1000 //p' probe.log >got-sysex.hex
cmp -s got-sysex.hex sysex.hex || fail "probe did not get the 1000-byte SysEx whole"
echo "seq_probe: probe got 5 short messages and the SysEx whole, and both subscriptions"

# What came back out through the kernel to aseqdump (events in file order, SysEx joined).
sed -n "s/^ *$addr *//p" dump.txt | grep -v '^System exclusive' | sed 's/  */ /g' >got.txt
cat >want.txt <<'EOF'
Note on 0, note 60, velocity 100
Control change 0, controller 7, value 100
Pitch bend 0, value 2048
Program change 0, program 5
Note off 0, note 60, velocity 0
EOF
cmp -s got.txt want.txt || fail "echoed events differ"
grep "^ *$addr *System exclusive" dump.txt | sed 's/.*System exclusive *//' | tr '\n' ' ' |
    sed 's/ $//' >got-echo.hex
echo >>got-echo.hex
cmp -s got-echo.hex sysex.hex || fail "echoed SysEx differs"
# The note-off was sent after the SysEx, whose chunks are paced: it must still come last.
grep "^ *$addr " dump.txt | tail -n 1 | grep -q 'Note off' || fail "the note-off overtook the SysEx"
echo "seq_probe: echo arrived at aseqdump unchanged ($(grep -c 'System exclusive' dump.txt) SysEx events)"

sysex_bytes() { grep "^ *$1 *System exclusive" "$2" | sed 's/.*System exclusive *//' | tr '\n' ' ' | sed 's/ $//'; }
./seq_probe --sysex 102400 >probe2.log 2>&1 &
wait_for probe2.log '^ready ' "the second probe to start"
addr=$(sed -n 's/^ready //p' probe2.log)
aseqdump -p "$addr" >dump2.txt 2>&1 &
dump=$!
start=$(now)
all_chunks() { [ "$(grep -c "^ *$addr *System exclusive" dump2.txt)" -ge 400 ]; }
wait_until "400 SysEx events at aseqdump" all_chunks
end=$(now)
kill $dump
wait $dump || true
sysex_bytes "$addr" dump2.txt >got-big.hex
echo >>got-big.hex
cmp -s got-big.hex big.hex || fail "the 100 KiB SysEx arrived changed"
echo "seq_probe: 100 KiB SysEx reached aseqdump whole in $(grep -c 'System exclusive' dump2.txt) events," \
    "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s," \
    "$(sed -n 's/^sent sysex [0-9]* (backlog \([0-9]*\))/\1/p' probe2.log) events waited in the backlog"
echo "seq_probe: PASS"
