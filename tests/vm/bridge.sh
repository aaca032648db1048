#!/bin/sh
# The daemon's ALSA bridge end to end on a real kernel sequencer: daemons on the guest's
# loopback, alsa-utils as the local applications. Daemon A listens on 5004; B (6004) connects to
# it with `-C A@127.0.0.1:5004`, so B has a port "A" and, once connected, A has a port "B".
# Checks (each prints PASS or a FAIL line naming what went wrong):
#   a  subscribing to B's "A" opens the session (A logs it, A gets a port "B"; neither before),
#      the last unsubscription closes it (A's "B" goes); in between, a .mid played
#      into A's "B" and system common/realtime bytes sent through VirMIDI arrive at aseqdump on
#      B's "A": the same events in the same order as a direct local dump, nothing else
#   b  the same the other way round (into B's "A", dumped on A's "B")
#   e  a 100 KiB SysEx (paced by seq_probe) into A's "B" reaches aseqdump on B's "A" whole
#   m  5000 notes on and off, in bursts of 1000 at once 2 s apart, into A's "B" reach a
#      probe on B's "A" whole and in order, with no overrun or drop on the way; then 1900 more
#      at once while A is stopped, which A reads in batches when it goes on (the tail from
#      alsa-lib's buffer, of which the kernel's fd says nothing)
#   c  export: Midi Through 14:0 and a probe connected to A's Network port get listeners 5006
#      and 5008; daemon C connects to 5006: the .mid played into 14:0 reaches C's port, what C's
#      side sends reaches 14:0 and neither the probe nor A's "B"; disconnecting withdraws the
#      export and C's session ends with BY
#   d  B stops: A's "B" goes; B restarts and is subscribed again: one "B" comes back
#   x  --export-auto software:PROBE: daemon E exports a probe that was there and one that
#      starts later (not Midi Through), and withdraws the export when the probe exits
#   h  --hub with ALSA: daemons X1 and X2 connect to hub H; what X1's port sends reaches X2's
#      port through the hub, H's port for X1, and not X1 again
#   p  --playout-delay: notes 100 ms apart played into A's "B" while B stalls for 200 ms reach
#      a probe on B's "A" with their spacing kept (B restarted with --playout-delay 400; first
#      without, to show the stall bunches them); the same into B's port for a daemon D (which
#      B invited, so D times by arrivals) while D stalls
#
# Usage: tests/vm/bridge.sh [CHECK...]  (on the host: builds, writes the .mid files, boots)
#        bridge.sh --guest [CHECK...]   (inside the VM)
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
# Every channel message kind, on several channels, and a short SysEx (GM on).
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
    4, 0x9F, 0x3E, 0x00,      # note on velocity 0
]))
# Eight notes 100 ms apart (19.2 ticks at 120 bpm: use 500000 us/quarter and 96 ticks ->
# 5.208 ms a tick; tempo 480000 us/quarter makes a tick 5 ms, 20 ticks 100 ms).
notes = bytes([0, 0xFF, 0x51, 0x03, 0x07, 0x53, 0x00])
for i in range(8):
    notes += bytes([0 if i == 0 else 20, 0x90, 0x40 + i, 0x64])
write_smf(out + "/spaced.mid", notes)
# 5000 events: note on and off in turn over all channels and notes, velocities 1..100 (as
# tests/steady_state_alloc.rs's `event`), in bursts of 1000 at the same tick, 2 s apart (5 ms
# ticks): a burst fits a reader's kernel FIFO (at most 2000 events; ALSA has no flow control,
# a sender that outpaces its reader by more overruns it), and a debug daemon under TCG reads
# one before the next comes (250 ms apart, it fell behind and overran). stopped.mid: the
# first 1900 at once. burst.hex has the events as seq_probe prints them.
burst = [bytes([(0x90 if i % 2 == 0 else 0x80) | (i // 2 % 16), i // 2 % 128, 1 + i % 100])
         for i in range(5000)]
tempo = bytes([0, 0xFF, 0x51, 0x03, 0x07, 0x53, 0x00])
write_smf(out + "/burst.mid", tempo + b"".join(
    bytes([0x83, 0x10] if i and i % 1000 == 0 else [0]) + e for i, e in enumerate(burst)))
write_smf(out + "/stopped.mid", b"".join(b"\x00" + e for e in burst[:1900]))
write_hex(out + "/burst.hex", burst)
write_hex(out + "/big.hex", [sysex(100 * 1024)])  # what seq_probe --sysex sends
EOF
    exec "$here/run.sh" --timeout "${BRIDGE_TIMEOUT:-240}" --copy "$0:bridge.sh" \
        --copy "$here/guest-lib.sh:guest-lib.sh" \
        --copy "$target/rtpmidid:rtpmidid" --copy "$target/examples/seq_probe:seq_probe" \
        --copy "$tmp/events.mid:events.mid" --copy "$tmp/spaced.mid:spaced.mid" \
        --copy "$tmp/big.hex:big.hex" --copy "$tmp/burst.mid:burst.mid" --copy "$tmp/stopped.mid:stopped.mid" --copy "$tmp/burst.hex:burst.hex" \
        -- /bin/sh bridge.sh --guest "$@"
fi
shift
. ./guest-lib.sh

# Ends the current check: kills what it started, shows the logs.
fail() {
    echo "bridge: FAIL: check $check: $*"
    for f in a.log b.log c.log e.log; do [ -f $f ] && { echo "--- $f (tail)"; tail -n 15 $f | cut -c1-200; }; done
    [ -f burst.log ] && echo "--- burst.log: $(grep -c '^midi' burst.log) events"
    echo "--- aconnect -l"
    aconnect -l
    stop_started
    exit 1
}
# Starts aseqdump on ADDR writing FILE, waits until its subscription shows.
dump() { # ADDR FILE [ARGS]
    addr=$1 file=$2
    shift 2
    aseqdump "$@" -p "$addr" >"$file" 2>&1 &
    started $!
    wait_until "aseqdump on $addr" subscribed_to "$addr"
}
daemon() { # LOG ARGS...
    log=$1
    shift
    ./rtpmidid -v --no-mdns -b 127.0.0.1 "$@" >"$log" 2>&1 &
    echo $!
}
A_ARGS="-n A --alsa-name rtpA -p 5004"
B_ARGS="-n B --alsa-name rtpB -p 6004 -C A@127.0.0.1:5004"
start_b() { # [EXTRA ARGS]
    # shellcheck disable=SC2086
    b_pid=$(daemon b.log $B_ARGS "$@")
    echo "$b_pid" >b.pid
    wait_until "B's port \"A\"" has_port rtpB A
}
# Subscribes aseqdump to B's "A" and waits for A's port "B" (the session is up).
b_connected() { # DUMPFILE [ARGS]
    file=$1
    shift
    dump "$(port_of rtpB A)" "$file" "$@"
    wait_until "A's port \"B\"" has_port rtpA B
}

# --- a: A -> B, every kind of event
check_a() {
    dump 14:0 ref1.txt
    aplaymidi -p 14:0 events.mid || fail "aplaymidi into Midi Through failed"
    wait_until "10 events in the reference dump" count_at_least ref1.txt 10
    dump 16:0 ref2.txt
    # Seconds after B started and nothing subscribed to its port A: no session yet.
    grep -q 'session opened' a.log && fail "B connected to A before anything subscribed to B's port A"
    no_port rtpA B || fail "A has a port B before anything subscribed to B's port A"
    b_connected net.txt
    wait_for a.log 'session opened: "B"' "A to log the session from B"
    grep -q "session opened: \"B\" at 127.0.0.1:6004" a.log || fail "A's session is not from 127.0.0.1:6004"
    aplaymidi -p "$(port_of rtpA B)" events.mid || fail "aplaymidi into A's port B failed"
    aconnect 16:0 "$(port_of rtpA B)" || fail "aconnect VirMIDI to A's port B"
    # MTC quarter frame, song position, song select, tune request, clock, start, continue, stop,
    # active sensing, reset.
    amidi -p hw:0,0 -S 'F1 35 F2 10 20 F3 05 F6 F8 FA FB FC FE FF' || fail "amidi failed"
    wait_until "10 system events in the VirMIDI dump" count_at_least ref2.txt 10
    { events ref1.txt; events ref2.txt; } >want.txt
    n=$(wc -l <want.txt)
    wait_until "$n events at aseqdump on B's port A" count_at_least net.txt "$n"
    aconnect -d 16:0 "$(port_of rtpA B)"
    stop_started
    events net.txt >got.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt; fail "events through A -> B differ from the local dump"; }
    # The last subscription to B's port A went with aseqdump: B ends the session.
    wait_for b.log 'nothing is connected to 127.0.0.1:5004 any more' "B to close the unwanted session"
    wait_until "A's port \"B\" to go with the session" no_port rtpA B
    echo "bridge: a: PASS: session B -> A opened by the first subscription and closed with the last," \
        "A's port B with it, $n events A -> B unchanged"
}

# --- b: B -> A
check_b() {
    dump 14:0 ref1.txt
    aplaymidi -p 14:0 events.mid || fail "aplaymidi into Midi Through failed"
    wait_until "10 events in the reference dump" count_at_least ref1.txt 10
    dump 16:0 ref2.txt
    # Something must keep B's session wanted: a reader on B's "A".
    dump "$(port_of rtpB A)" keep.txt
    wait_until "A's port \"B\"" has_port rtpA B
    dump "$(port_of rtpA B)" net.txt
    aplaymidi -p "$(port_of rtpB A)" events.mid || fail "aplaymidi into B's port A failed"
    aconnect 16:0 "$(port_of rtpB A)" || fail "aconnect VirMIDI to B's port A"
    amidi -p hw:0,0 -S 'F1 35 F2 10 20 F3 05 F6 F8 FA FB FC FE FF' || fail "amidi failed"
    wait_until "10 system events in the VirMIDI dump" count_at_least ref2.txt 10
    { events ref1.txt; events ref2.txt; } >want.txt
    n=$(wc -l <want.txt)
    wait_until "$n events at aseqdump on A's port B" count_at_least net.txt "$n"
    aconnect -d 16:0 "$(port_of rtpB A)"
    stop_started
    events net.txt >got.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt; fail "events through B -> A differ from the local dump"; }
    [ -z "$(events keep.txt)" ] || fail "B's own port A echoed events: $(events keep.txt | head -n 3)"
    echo "bridge: b: PASS: $n events B -> A unchanged"
}

# --- e: 100 KiB SysEx A -> B
check_e() {
    b_connected big.txt
    ./seq_probe --sysex 102400 >probe.log 2>&1 &
    started $!
    wait_for probe.log '^ready ' "the probe to start"
    probe=$(sed -n 's/^ready //p' probe.log)
    start=$(now)
    aconnect "$probe" "$(port_of rtpA B)" || fail "aconnect probe to A's port B"
    wait_for probe.log '^sent sysex 102400' "the probe to send its SysEx"
    # 400 chunks of 256 bytes at 32 KB/s out of the probe, and again out of B: ~6.4 s.
    all_chunks() { [ "$(grep -c 'System exclusive' big.txt)" -ge 400 ]; }
    LIMIT=40 wait_until "400 SysEx events at aseqdump on B's port A" all_chunks
    end=$(now)
    stop_started
    grep 'System exclusive' big.txt | sed 's/.*System exclusive *//' | tr '\n' ' ' | sed 's/ $//' >got-big.hex
    echo >>got-big.hex
    cmp -s got-big.hex big.hex || fail "the 100 KiB SysEx arrived changed ($(wc -c <got-big.hex) hex bytes, want $(wc -c <big.hex))"
    grep -q 'overrun\|dropped' a.log b.log && fail "a daemon logged an overrun or drop"
    echo "bridge: e: PASS: 100 KiB SysEx A -> B whole in $(grep -c 'System exclusive' big.txt) events," \
        "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s"
}

# --- m: bursts of thousands of events A -> B
check_m() {
    ./seq_probe >burst.log 2>&1 &
    started $!
    wait_for burst.log '^ready ' "the probe to start"
    probe=$(sed -n 's/^ready //p' burst.log)
    aconnect "$(port_of rtpB A)" "$probe" || fail "aconnect B's port A to the probe"
    wait_until "A's port \"B\"" has_port rtpA B
    received() { [ "$(grep -c '^midi' burst.log)" -ge "$1" ]; }
    start=$(now)
    aplaymidi -p "$(port_of rtpA B)" burst.mid || fail "aplaymidi into A's port B failed"
    LIMIT=60 wait_until "5000 events at the probe on B's port A" received 5000
    end=$(now)
    # With A stopped all 1900 wait in its kernel FIFO; A reads 256 at a time, alsa-lib up to
    # 500 from the kernel: after the last read from the kernel, 364 wait in alsa-lib's buffer.
    kill -STOP "$a_pid"
    aplaymidi -p "$(port_of rtpA B)" stopped.mid || { kill -CONT "$a_pid"; fail "aplaymidi into stopped A failed"; }
    kill -CONT "$a_pid"
    LIMIT=60 wait_until "1900 more events at the probe on B's port A" received 6900
    sleep 0.5 # anything more would be a duplicate
    stop_started
    sed -n 's/^midi [0-9:]* len [0-9]* //p' burst.log >got-burst.hex
    { cat burst.hex; head -n 1900 burst.hex; } >want-burst.hex
    cmp -s got-burst.hex want-burst.hex ||
        fail "the bursts arrived changed: $(wc -l <got-burst.hex) events, $(cmp got-burst.hex want-burst.hex)"
    grep -q 'overrun\|dropped' a.log b.log burst.log &&
        fail "an overrun or drop: $(grep -h 'overrun\|dropped' a.log b.log burst.log | head -n 3)"
    echo "bridge: m: PASS: 5000 events in bursts of 1000 A -> B whole and in order in" \
        "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s, then 1900 queued for a stopped A"
}

# --- c: export through Network
check_c() {
    net=$(port_of rtpA Network)
    ./seq_probe >probe.log 2>&1 &
    started $!
    wait_for probe.log '^ready ' "the probe to start"
    probe=$(sed -n 's/^ready //p' probe.log)
    aconnect 14:0 "$net" && aconnect "$net" 14:0 || fail "aconnect 14:0 <-> Network"
    wait_for a.log 'exporting ALSA port 14:0' "A to export 14:0"
    wait_for a.log 'listening on 127.0.0.1:5006' "the export listener on 5006"
    aconnect "$probe" "$net" && aconnect "$net" "$probe" || fail "aconnect probe <-> Network"
    wait_for a.log "exporting ALSA port $probe" "A to export the probe"
    wait_for a.log 'listening on 127.0.0.1:5008' "the second export listener on 5008"
    # Someone subscribed to A's port B as well: it must hear nothing of the export.
    b_connected bport.txt
    dump "$(port_of rtpA B)" aport.txt
    c_pid=$(daemon c.log -n C --alsa-name rtpC -p 7004 -C X@127.0.0.1:5006)
    started "$c_pid"
    wait_until "C's port \"X\"" has_port rtpC X
    dump "$(port_of rtpC X)" cdump.txt
    wait_for c.log 'session opened: "A Midi Through Midi Through Port-0"' "C's session with the export"
    dump 14:0 through.txt
    aplaymidi -p 14:0 events.mid || fail "aplaymidi into 14:0 failed"
    wait_until "10 events at aseqdump on C's port X" count_at_least cdump.txt 10
    events through.txt >want.txt
    events cdump.txt >got.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt; fail "events from 14:0 at C differ from 14:0's own"; }
    # What C's side sends goes to 14:0 only (Midi Through then echoes it to its readers).
    aplaymidi -p "$(port_of rtpC X)" spaced.mid || fail "aplaymidi into C's port X failed"
    wait_until "8 more events at 14:0" count_at_least through.txt 18
    events through.txt | tail -n 8 >got.txt
    for n in 64 65 66 67 68 69 70 71; do echo "Note on 0, note $n, velocity 100"; done >want.txt
    cmp -s got.txt want.txt || { cat got.txt; fail "C's 8 notes did not reach 14:0"; }
    grep -q '^midi' probe.log && fail "the other exported port (the probe) got MIDI: $(grep '^midi' probe.log | head -n 2)"
    [ -z "$(events aport.txt)" ] || fail "A's port B got export traffic: $(events aport.txt | head -n 2)"
    [ -z "$(events bport.txt)" ] || fail "B got export traffic: $(events bport.txt | head -n 2)"
    aconnect -d 14:0 "$net" && aconnect -d "$net" 14:0 || fail "aconnect -d 14:0 <-> Network"
    wait_for a.log 'no longer exporting 14:0' "A to withdraw the export"
    wait_for c.log 'session closed: .*PeerEnded' "C's session to end with BY"
    grep -q 'no longer exporting' a.log && ! grep -q "no longer exporting $probe" a.log ||
        fail "withdrawing 14:0 withdrew the probe's export too"
    stop_started
    echo "bridge: c: PASS: 14:0 exported on 5006 (probe on 5008), MIDI both ways only to the exported port, withdrawn with BY"
}

# --- d: ports follow peers
check_d() {
    b_connected keep.txt
    restart_b # while the dump still wants the session: the port goes because B went
    stop_started
    b_connected keep.txt
    [ "$(port_of rtpA B | wc -l)" -eq 1 ] || fail "A has $(port_of rtpA B | wc -l) ports named B"
    stop_started
    echo "bridge: d: PASS: A's port B went with B and came back once"
}

# --- p: --playout-delay keeps the spacing through a stall of the receiving daemon
# Notes 100 ms apart are played into A's "B"; arecordmidi on B's "A" records when each arrives
# (the kernel stamps them, at 1 ms resolution). B is stopped (SIGSTOP) for 200 ms during the
# playing, so the notes sent meanwhile reach it late, at once: without a delay that shows
# as a gap and a bunch; with --playout-delay 400 the queue puts them back at their times.
# Note-on times in ms from a .mid that arecordmidi wrote with -f 25 -t 40 (1 ms ticks).
note_times() { # FILE
    od -An -v -tu1 "$1" | tr -s ' ' '\n' | grep -v '^$' | awk '
        { b[n++] = $1 }
        function varlen() { v = 0; do { c = b[i++]; v = v * 128 + c % 128 } while (c >= 128); return v }
        END {
            i = 22 # MThd and its 6 bytes, "MTrk" and its length
            while (i < n) {
                t += varlen()
                s = b[i]
                if (s >= 128) { i++; if (s < 240) rs = s } else s = rs
                if (s == 255) { i++; i += varlen(); continue }
                if (s == 240 || s == 247) { i += varlen(); continue }
                hi = int(s / 16)
                if (hi == 12 || hi == 13) { i++; continue }
                if (hi == 9 && b[i + 1] > 0) print t
                i += 2
            }
        }'
}
# The tolerance allows for a virtual CPU on a loaded host (seen: within 10 ms).
spacing() { # FILE.mid -> prints the gaps in ms; fails if one is off by more than TOL ms
    note_times "$1" | awk -v tol="${TOL:-20}" '
        NR > 1 { d = $1 - p; s = s " " d; if (d < 100 - tol || d > 100 + tol) bad = 1 }
        { p = $1 } END { print "gaps (ms):" s; exit bad || NR != 8 }'
}
# spaced.mid into TX, recorded on RX into NAME.mid; PID stalls for 200 ms 250 ms into the
# playing. Nothing polls while the notes play: on one virtual CPU, polling delays the sending
# daemon's reads, and so its time stamps, by tens of ms.
play_stalled() { # TX RX PID NAME
    # Warm-up: under TCG the first run of a code path is translated first and takes tens of
    # ms, which would show as a late first note in both daemons.
    dump "$2" warm.txt
    aplaymidi -p "$1" events.mid || fail "warm-up: aplaymidi into $1 failed"
    wait_until "the warm-up events at $2" count_at_least warm.txt 10
    arecordmidi -p "$2" -f 25 -t 40 -n 8 "$4.mid" &
    rec=$!
    started $rec
    wait_until "arecordmidi on $2" subscribed_to "$2"
    aplaymidi -p "$1" spaced.mid &
    play=$!
    # The stall is the stimulus, timed by sleeps; nothing waits on them.
    (sleep 0.25 && kill -STOP "$3" && sleep 0.2 && kill -CONT "$3") &
    stall=$!
    wait $play || fail "aplaymidi into $1 failed"
    wait $stall || fail "could not stall $3"
    wait_until "arecordmidi to record 8 notes from $2" test -s "$4.mid"
    wait $rec || fail "arecordmidi failed"
    stop_started
}
# A -> B: B invited A, so B runs CK rounds and knows A's clock offset.
stalled_a_to_b() { # NAME
    dump "$(port_of rtpB A)" keep.txt
    wait_until "A's port \"B\"" has_port rtpA B
    wait_for b.log 'clock sync with' "B's first CK round"
    play_stalled "$(port_of rtpA B)" "$(port_of rtpB A)" "$(cat b.pid)" "$1"
}
restart_b() { # [EXTRA ARGS]
    kill -TERM "$(cat b.pid)"
    wait_until "A's port \"B\" to go" no_port rtpA B
    wait_until "B's client to go" no_port rtpB A
    start_b "$@"
}
check_p() {
    restart_b
    stalled_a_to_b direct
    gaps=$(TOL=1000 spacing direct.mid)
    echo "bridge: p: A -> B without a playout delay, $gaps"
    # Without the delay the stall must show (else this check proves nothing): a gap of 200 ms.
    echo "$gaps" | tr ' ' '\n' | awk '$1 >= 200 { found = 1 } END { exit !found }' ||
        fail "the 200 ms stall of B did not show without a playout delay"
    # D answers B's invitation: it has no CK offset of its own and times by arrivals.
    d_pid=$(daemon d.log -n D --alsa-name rtpD -p 8004 --playout-delay 400)
    echo "$d_pid" >d.pid
    wait_until "D's Network port" has_port rtpD Network
    restart_b --playout-delay 400 -C D@127.0.0.1:8004
    stalled_a_to_b delayed
    gaps=$(spacing delayed.mid) || fail "A -> B (CK offset): spacing not kept with --playout-delay 400: $gaps"
    echo "bridge: p: A -> B with --playout-delay 400 (CK offset), $gaps"
    aconnect 14:0 "$(port_of rtpB D)" || fail "aconnect 14:0 to B's port D"
    wait_until "D's port \"B\"" has_port rtpD B
    play_stalled "$(port_of rtpB D)" "$(port_of rtpD B)" "$d_pid" responder
    gaps=$(spacing responder.mid) || fail "B -> D (arrivals): spacing not kept with --playout-delay 400: $gaps"
    echo "bridge: p: B -> D with --playout-delay 400 (arrivals), $gaps"
    aconnect -d 14:0 "$(port_of rtpB D)"
    kill "$d_pid"
    echo "bridge: p: PASS"
}

# --- x: --export-auto exports matching ports already there and as they appear
check_x() {
    ./seq_probe --watch >w1.log 2>&1 &
    started $!
    wait_for w1.log '^ready ' "the first probe to start"
    p1=$(sed -n 's/^ready //p' w1.log)
    e_pid=$(daemon e.log -n E --alsa-name rtpE -p 9004 --export-auto software:PROBE)
    started "$e_pid"
    wait_for e.log "exporting ALSA port $p1 as" "E to export the probe that was there"
    ./seq_probe >w2.log 2>&1 &
    p2_pid=$!
    started $p2_pid
    wait_for w2.log '^ready ' "the second probe to start"
    p2=$(sed -n 's/^ready //p' w2.log)
    wait_for e.log "exporting ALSA port $p2 as" "E to export the probe that appeared"
    wait_for e.log "listening on 127.0.0.1:9008" "the second export's listener"
    grep -q "exporting ALSA port 14:0" e.log && fail "E exported Midi Through, which the pattern excludes"
    grep -q "^port started 14:0 'Midi Through' 'Midi Through Port-0' software readable writable" w1.log ||
        fail "the watching probe did not list Midi Through"
    grep -q "^port started $p2 'seq_probe' 'probe' software readable writable" w1.log ||
        fail "the watching probe did not see the second probe start"
    kill $p2_pid
    wait_for e.log "no longer exporting $p2" "E to withdraw the export of the probe that went"
    wait_for w1.log "^port exited $p2" "the watching probe to see the second probe exit"
    stop_started
    echo "bridge: x: PASS: --export-auto software:PROBE exported the probe there at start and one started later, not 14:0; withdrawn when it went"
}

# --- h: the hub with ALSA present
check_h() {
    dump 14:0 ref1.txt
    aplaymidi -p 14:0 events.mid || fail "aplaymidi into Midi Through failed"
    wait_until "10 events in the reference dump" count_at_least ref1.txt 10
    events ref1.txt >want.txt
    h_pid=$(daemon h.log -n H --alsa-name rtpH -p 10004 --hub)
    started "$h_pid"
    wait_until "H's Network port" has_port rtpH Network
    for x in X1 X2; do
        pid=$(daemon "$x.log" -n "$x" --alsa-name "rtp$x" -p "1${x#X}004" -C H@127.0.0.1:10004)
        started "$pid"
        wait_until "$x's port \"H\"" has_port "rtp$x" H
        dump "$(port_of "rtp$x" H)" "$x.txt"
        wait_until "H's port \"$x\"" has_port rtpH "$x"
    done
    dump "$(port_of rtpH X1)" hx1.txt
    aplaymidi -p "$(port_of rtpX1 H)" events.mid || fail "aplaymidi into X1's port H failed"
    wait_until "10 events at X2 through the hub" count_at_least X2.txt 10
    wait_until "10 events at H's port X1" count_at_least hx1.txt 10
    stop_started
    events X2.txt >got.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt; fail "events X1 -> hub H -> X2 differ"; }
    events hx1.txt >got.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt; fail "events X1 -> H's ALSA port X1 differ"; }
    [ -z "$(events X1.txt)" ] || fail "the hub sent X1's events back to X1"
    echo "bridge: h: PASS: with ALSA, hub H forwards X1's events to X2 (not back to X1) and to its port X1"
}

checks=${*:-a b e m c d p x h}
a_pid=$(daemon a.log $A_ARGS)
wait_until "A's Network port" has_port rtpA Network
start_b
failed=
for check in $checks; do
    rm -f started.pids
    if ! (check_$check); then failed="$failed $check"; fi
done
for p in $(cat b.pid) $a_pid; do kill -TERM "$p" 2>/dev/null || true; done
if [ -n "$failed" ]; then
    echo "bridge: FAIL:$failed"
    exit 1
fi
echo "bridge: PASS ($checks)"
