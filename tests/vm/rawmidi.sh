#!/bin/sh
# [rawmidi NAME] on a real raw MIDI device: snd-virmidi's /dev/snd/midiC0D0, whose sequencer
# side is client 16:0 (bytes written to the device come out of 16:0, events sent to 16:0 are
# read from it). Daemon R (--no-alsa) offers the device as session "V" on 5010; daemon B
# (with ALSA) connects to it with -C V@127.0.0.1:5010, so B's port "V" stands for the device.
#   1  device -> network: events.mid and a 10 KiB SysEx played into 16:0 reach aseqdump on
#      B's "V" as a local dump of the same input shows them
#   2  network -> device: events.mid and a 1 KiB SysEx played into B's "V" come out of 16:0
#   3  the device node goes (renamed away, as udev removes it): B's session ends with BY; it
#      comes back: B's session opens again and a note goes each way
# Prints PASS or a FAIL line naming what went wrong.
#
# Usage: tests/vm/rawmidi.sh  (on the host: builds, writes the .mid file, boots)
#        rawmidi.sh --guest   (inside the VM)
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    repo=$(cd "$here/../.." && pwd)
    (cd "$repo" && cargo build -q --bin rtpmidid --example seq_probe)
    target=${CARGO_TARGET_DIR:-$repo/target}/debug
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    PYTHONPATH=$here python3 - "$tmp" <<'EOF'
import sys
from smf import sysex, write_hex, write_smf
out = sys.argv[1]
write_smf(out + "/events.mid", bytes([
    0, 0x90, 0x3C, 0x64,      # note on ch 0
    0, 0xA0, 0x3C, 0x20,      # poly pressure
    4, 0xB1, 0x07, 0x64,      # CC 7 ch 1
    0, 0xC2, 0x05,            # program ch 2
    4, 0xD3, 0x40,            # channel pressure ch 3
    0, 0xE4, 0x00, 0x50,      # pitch bend ch 4
    0, 0xF0, 0x05, 0x7E, 0x7F, 0x09, 0x01, 0xF7,  # SysEx
    8, 0x80, 0x3C, 0x40,      # note off with velocity
    0, 0x9F, 0x3E, 0x7F,      # note on ch 15
]))
for n in (10240, 1024):  # what seq_probe --sysex N sends
    write_hex("%s/sysex%d.hex" % (out, n), [sysex(n)])
EOF
    exec "$here/run.sh" --mem 512 --timeout "${RAWMIDI_TIMEOUT:-180}" --copy "$0:rawmidi.sh" \
        --copy "$here/guest-lib.sh:guest-lib.sh" \
        --copy "$target/rtpmidid:rtpmidid" --copy "$target/examples/seq_probe:seq_probe" \
        --copy "$tmp/events.mid:events.mid" --copy "$tmp/sysex10240.hex:sysex10240.hex" \
        --copy "$tmp/sysex1024.hex:sysex1024.hex" \
        -- /bin/sh ${RAWMIDI_SH_FLAGS:-} rawmidi.sh --guest
fi
. ./guest-lib.sh

fail() {
    echo "rawmidi: FAIL: $*"
    for f in r.log b.log; do [ -f $f ] && { echo "--- $f (tail)"; tail -n 20 $f | cut -c1-200; }; done
    echo "--- aconnect -l"
    aconnect -l
    ls -l /dev/snd
    exit 1
}
dump() { # ADDR FILE
    aseqdump -p "$1" >"$2" 2>&1 &
    started $!
    wait_until "aseqdump on $1" subscribed_to "$1"
}
# The SysEx bytes a dump got, as one hex line.
sysex_of() { # DUMP
    grep 'System exclusive' "$1" | sed 's/.*System exclusive *//' | tr '\n' ' ' | sed 's/ $//'
    echo
}
# A SysEx of N bytes from seq_probe into ADDR.
send_sysex() { # N ADDR
    ./seq_probe --sysex "$1" >probe.log 2>&1 &
    started $!
    wait_for probe.log '^ready ' "the probe to start"
    aconnect "$(sed -n 's/^ready //p' probe.log)" "$2" || fail "aconnect probe to $2"
    wait_for probe.log "^sent sysex $1" "the probe to send its SysEx"
}

[ -c /dev/snd/midiC0D0 ] || fail "no /dev/snd/midiC0D0 (snd-virmidi)"
cat >r.conf <<'EOF'
[rawmidi V]
device = /dev/snd/midiC0D0
port = 5010
EOF
./rtpmidid -v --no-mdns --no-alsa --no-midi2 -b 127.0.0.1 -n R -p 5004 -c r.conf >r.log 2>&1 &
r_pid=$!
wait_for r.log 'listening as "V" on UDP port 5010' "R to offer the device on 5010"
./rtpmidid -v --no-mdns --no-midi2 -b 127.0.0.1 -n B --alsa-name rtpB -p 6004 \
    -C V@127.0.0.1:5010 >b.log 2>&1 &
b_pid=$!
wait_until "B's port \"V\"" has_port rtpB V
v=$(port_of rtpB V)
# The reference: the same input dumped locally.
dump 14:0 ref.txt
aplaymidi -p 14:0 events.mid || fail "aplaymidi into Midi Through failed"
wait_until "9 events in the reference dump" count_at_least ref.txt 9
events ref.txt >want.txt
n=$(wc -l <want.txt)

# --- 1: device -> network. B's port wanted: B connects, R opens the device.
dump "$v" net.txt
wait_for r.log 'midiC0D0 opened' "R to open the device"
aplaymidi -p 16:0 events.mid || fail "aplaymidi into 16:0 failed"
wait_until "$n events at aseqdump on B's V" count_at_least net.txt "$n"
events net.txt >got.txt
cmp -s got.txt want.txt || { diff want.txt got.txt; fail "device -> network: events differ from the local dump"; }
dump "$v" sx1.txt # a fresh dump: what comes next only
send_sysex 10240 16:0
all() { [ "$(sysex_of sx1.txt | wc -c)" -ge "$(wc -c <sysex10240.hex)" ]; }
LIMIT=40 wait_until "the 10 KiB SysEx at B's V" all
sysex_of sx1.txt >got.hex
cmp -s got.hex sysex10240.hex || fail "device -> network: the 10 KiB SysEx arrived changed ($(wc -c <got.hex) hex bytes)"
stop_started
echo "rawmidi: 1: PASS: $n events and a 10 KiB SysEx from the device at B's port V"

# --- 2: network -> device
dump "$v" keep.txt # keeps B's session wanted
dump 16:0 dev.txt
aplaymidi -p "$v" events.mid || fail "aplaymidi into B's V failed"
wait_until "$n events out of 16:0" count_at_least dev.txt "$n"
events dev.txt >got.txt
cmp -s got.txt want.txt || { diff want.txt got.txt; fail "network -> device: events differ from the local dump"; }
dump 16:0 sx2.txt
send_sysex 1024 "$v"
all() { [ "$(sysex_of sx2.txt | wc -c)" -ge "$(wc -c <sysex1024.hex)" ]; }
LIMIT=40 wait_until "the 1 KiB SysEx out of 16:0" all
sysex_of sx2.txt >got.hex
cmp -s got.hex sysex1024.hex || fail "network -> device: the 1 KiB SysEx arrived changed ($(wc -c <got.hex) hex bytes)"
echo "rawmidi: 2: PASS: $n events and a 1 KiB SysEx from B's port V out of the device"

# --- 3: unplug and replug (the node goes and comes back, as udev does it)
before=$(grep -c 'midiC0D0 opened' r.log)
mv /dev/snd/midiC0D0 /dev/snd/gone
wait_for r.log 'raw MIDI device "V" is gone' "R to see the device go"
wait_for b.log 'session closed: .*PeerEnded' "B's session to end with BY"
mv /dev/snd/gone /dev/snd/midiC0D0
# B reconnects with its back-off (up to 30 s).
opened() { [ "$(grep -c 'midiC0D0 opened' r.log)" -gt "$before" ]; }
LIMIT=60 wait_until "B's session with the device back" opened
dump "$v" net3.txt
dump 16:0 dev3.txt
aplaymidi -p 16:0 events.mid || fail "aplaymidi into 16:0 failed"
wait_until "$n events at B's V" count_at_least net3.txt "$n"
aplaymidi -p "$v" events.mid || fail "aplaymidi into B's V failed"
wait_until "$n events out of 16:0" count_at_least dev3.txt "$n"
stop_started
kill "$r_pid" "$b_pid"
wait "$r_pid" "$b_pid" || true
grep -q 'dropped' r.log && fail "R dropped messages: $(grep dropped r.log | head -n 2)"
echo "rawmidi: 3: PASS: unplugging ended B's session with BY, replugging brought it back"
echo "rawmidi: PASS"
