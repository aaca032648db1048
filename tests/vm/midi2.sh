#!/bin/sh
# Network MIDI 2.0 sessions bridged to ALSA applications on a real kernel sequencer. Daemon M
# (guest loopback) is a Network MIDI 2.0 host on 5673 and connects to amidi2net-server on 5674
# with `-C midi2://S@127.0.0.1:5674`. amidi2net (the ALSA maintainer's implementation, built by
# tests/peers/amidi2net/build.sh with its test-only stdio backend) reads the UMP words it sends
# from a FIFO and writes those it receives to a file, one packet a line.
# Checks (each prints PASS or a FAIL line naming what went wrong):
#   h  amidi2net-client in a session with M's host: M gets a port "a2n-client";
#      up:   UMP from the client (MIDI 1.0 channel voice, MIDI 2.0 channel voice with 16- and
#            32-bit values, a 4000-byte SysEx7, notes after it) reach aseqdump on that port as
#            MIDI 1.0: the same events in the same order as a local dump of up.mid (the MIDI
#            1.0 they translate to, by the MIDI 2.0 specification's rules), nothing else
#      down: down.mid (channel voice, a 4000-byte SysEx, notes) played by aplaymidi into the port
#            reaches the client as exactly the UMP words of down.ump, nothing else
#   c  the same with M as the client: subscribing to M's port "S" opens the session with
#      amidi2net-server, then up and down as in h
#   r  an RTP-MIDI peer through a hub: amidi2net-client in a session with daemon H (--hub,
#      MIDI 2.0 host on 5675), daemon B (RTP-MIDI only) connected to H with `-C H@...`; up
#      and down as in h through B's port "H": amidi2net -> H -> RTP-MIDI -> B -> aseqdump,
#      aplaymidi -> B -> RTP-MIDI -> H -> amidi2net
#   l  SysEx with a hole: amidi2net-client sends a SysEx unpaced (a datagram a packet, as it
#      sends what an ALSA application gives it) while M is stopped, so M's socket drops its
#      middle: 1000 and more datagrams (more than M holds after a gap), then 200 (M holds the
#      end until amidi2net answers that it cannot retransmit). M gives the gaps up; aseqdump
#      gets the notes before and after, no SysEx (M once glued the parts around a gap of the
#      second kind into one; a debug M under TCG lost such a middle without being stopped)
#
# Usage: tests/vm/midi2.sh [CHECK...]  (on the host: builds, writes the files, boots)
#        midi2.sh --guest [CHECK...]   (inside the VM)
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    repo=$(cd "$here/../.." && pwd)
    (cd "$repo" && cargo build -q --bin rtpmidid)
    target=${CARGO_TARGET_DIR:-$repo/target}/debug
    a2n=$(bash "$repo/tests/peers/amidi2net/build.sh" | tail -n 1)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    PYTHONPATH=$here python3 - "$tmp" <<'EOF'
import sys
from smf import at_tick_zero, write_smf
out = sys.argv[1]
def sysex7(data):
    """SysEx payload bytes as UMP type 3 packets of 6 bytes (group 0)."""
    chunks = [data[i:i + 6] for i in range(0, len(data), 6)]
    out = []
    for i, c in enumerate(chunks):
        status = 1 if i == 0 else 3 if i == len(chunks) - 1 else 2
        b = c + bytes(6 - len(c))
        out.append("%08x %08x" % (0x30000000 | status << 20 | len(c) << 16 | b[0] << 8 | b[1],
                                  int.from_bytes(b[2:], "big")))
    return out
def write(path, lines):
    with open(path, "w") as f:
        f.writelines(l + "\n" for l in lines)
up_sx = bytes((i * 7 + 1) & 0x7F for i in range(4000))
down_sx = bytes((i * 5 + 2) & 0x7F for i in range(4000))
# amidi2net -> M: each UMP packet and the MIDI 1.0 it translates to.
up = [
    ("20903c64", "90 3c 64"),                  # note on ch 0
    ("20a03c20", "a0 3c 20"),                  # poly pressure
    ("20b10764", "b1 07 64"),                  # controller 7 ch 1
    ("20c20500", "c2 05"),                     # program ch 2
    ("20d34000", "d3 40"),                     # channel pressure ch 3
    ("20e40050", "e4 00 50"),                  # pitch bend ch 4
    # MIDI 2.0 channel voice (type 4) on ch 5, scaled down
    ("40953e00 ffff0000", "95 3e 7f"),         # note on, 16-bit velocity full scale
    ("40953f00 80000000", "95 3f 40"),         # 16-bit center
    ("40954000 01000000", "95 40 01"),         # scales to 0: kept a note on, velocity 1
    ("40b50700 80000000", "b5 07 40"),         # controller 7, 32-bit center
    ("40e50000 ffffffff", "e5 7f 7f"),         # pitch bend, 32-bit full scale
    ("40c50000 0a000000", "c5 0a"),            # program 10, no bank
    ("40853e00 00000000", "85 3e 00"),         # note off
]
write(out + "/lossy.ump", sysex7(bytes((i * 3 + 3) & 0x7F for i in range(10240))))
up_ump = [u for u, _ in up] + sysex7(up_sx) + ["20803c40", "209f3e7f"]
up_midi = [bytes.fromhex(m) for _, m in up] + [b"\xF0" + up_sx + b"\xF7",
                                               bytes.fromhex("80 3c 40"), bytes.fromhex("9f 3e 7f")]
write(out + "/up.ump", up_ump)
write_smf(out + "/up.mid", at_tick_zero(up_midi))
# ALSA -> M -> amidi2net: the MIDI 1.0 played and the UMP (type 2, SysEx7) to arrive.
down = [
    ("90 3c 64", "20903c64"), ("a0 3c 20", "20a03c20"), ("b1 07 64", "20b10764"),
    ("c2 05", "20c20500"), ("d3 40", "20d34000"), ("e4 00 50", "20e40050"),
    ("F0", None),  # the SysEx goes here
    ("80 3c 40", "20803c40"), ("9f 3e 7f", "209f3e7f"), ("9f 3e 00", "209f3e00"),
]
write_smf(out + "/down.mid",
          at_tick_zero([b"\xF0" + down_sx + b"\xF7" if m == "F0" else bytes.fromhex(m)
                        for m, _ in down]))
write(out + "/down.ump", [l for m, u in down for l in (sysex7(down_sx) if u is None else [u])])
EOF
    exec "$here/run.sh" --timeout "${MIDI2_TIMEOUT:-150}" --copy "$0:midi2.sh" \
        --copy "$here/guest-lib.sh:guest-lib.sh" --copy "$target/rtpmidid:rtpmidid" \
        --copy "$a2n/amidi2net-client:amidi2net-client" --copy "$a2n/amidi2net-server:amidi2net-server" \
        --copy "$tmp/up.ump:up.ump" --copy "$tmp/up.mid:up.mid" \
        --copy "$tmp/down.ump:down.ump" --copy "$tmp/down.mid:down.mid" --copy "$tmp/lossy.ump:lossy.ump" \
        -- /bin/sh midi2.sh --guest "$@"
fi
shift
. ./guest-lib.sh

# Ends the current check: kills what it started, shows the logs.
fail() {
    echo "midi2: FAIL: check $check: $*"
    kill -CONT "$m_pid" 2>/dev/null || true # check l stops it
    for f in m.log hub.log b.log a2n.log; do [ -f $f ] && { echo "--- $f (tail)"; tail -n 15 $f | cut -c1-200; }; done
    echo "--- aconnect -l"
    aconnect -l
    stop_started
    exit 1
}
dump() { # ADDR FILE
    aseqdump -p "$1" >"$2" 2>&1 &
    started $!
    wait_until "aseqdump on $1" subscribed_to "$1"
}
# events(), with the SysEx chunks of one message (the daemon writes 256 bytes an event) joined.
joined() { # DUMP
    events "$1" | awk '
        /^System exclusive / { sx = sx (sx == "" ? "" : " ") substr($0, 18); next }
        sx != "" { print "System exclusive " sx; sx = "" }
        { print }
        END { if (sx != "") print "System exclusive " sx }'
}
lines_at_least() { [ "$(wc -l <"$1")" -ge "$2" ]; } # FILE N
joined_at_least() { [ "$(joined "$1" | wc -l)" -ge "$2" ]; } # DUMP N
# amidi2net (server or client) with the stdio backend: UMP to send is written to fd 3 (a FIFO
# it reads), what it receives goes to a2n.out.
a2n() { # PROGRAM ARGS...
    rm -f a2n.in a2n.out
    mkfifo a2n.in
    exec 3<>a2n.in # read-write: opening does not wait for the reader, and no EOF between writes
    prog=$1
    shift
    "./$prog" --stdio --debug "$@" <a2n.in >a2n.out 2>a2n.log 3>&- &
    started $!
}
# FILE's lines to amidi2net, 16 at a time: it sends each packet as a datagram of its own, and a
# burst of hundreds would overflow the daemon's socket buffer.
send_paced() { # FILE
    n=$(wc -l <"$1")
    i=1
    while [ "$i" -le "$n" ]; do
        sed -n "$i,$((i + 15))p" "$1" >&3
        sleep 0.02
        i=$((i + 16))
    done
}

# Both ways through ADDR, M's port for the session with amidi2net.
up_and_down() { # ADDR
    dump "$1" up.txt
    start=$(now)
    send_paced up.ump
    LIMIT=40 wait_until "$n_up events at aseqdump on $1" joined_at_least up.txt "$n_up"
    up_s=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    sleep 0.5 # anything more would be extra
    joined up.txt >got.txt
    cmp -s got.txt want-up.txt || { diff want-up.txt got.txt | cut -c1-200; fail "amidi2net -> ALSA: events differ from the local dump of up.mid"; }
    n_down=$(wc -l <down.ump)
    aplaymidi -p "$1" down.mid || fail "aplaymidi into $1 failed"
    LIMIT=40 wait_until "$n_down UMP packets at amidi2net" lines_at_least a2n.out "$n_down"
    sleep 0.5
    cmp -s a2n.out down.ump || { diff down.ump a2n.out | head -n 20; fail "ALSA -> amidi2net: UMP differ from down.ump"; }
    grep -q 'overrun\|dropped' m.log hub.log b.log 2>/dev/null &&
        fail "a daemon logged an overrun or drop: $(grep -h 'overrun\|dropped' m.log hub.log b.log 2>/dev/null | head -n 3)"
    grep -q '^ERROR' a2n.log && fail "amidi2net logged errors: $(grep '^ERROR' a2n.log | head -n 3)"
    echo "midi2: $check: up $n_up events (SysEx of 4000 bytes) in $up_s s, down $n_down UMP packets, unchanged"
}

# --- h: amidi2net-client in a session with M's host
check_h() {
    a2n amidi2net-client --ep-name=a2n-client 127.0.0.1 5673
    wait_for a2n.log '^invitation accepted$' "the client's session"
    wait_for m.log 'session opened: "a2n-client" at 127.0.0.1:' "M to log the session"
    wait_until "M's port \"a2n-client\"" has_port rtpM a2n-client
    up_and_down "$(port_of rtpM a2n-client)"
    stop_started
    echo "midi2: h: PASS"
}

# --- c: M as client of amidi2net-server
check_c() {
    a2n amidi2net-server --ep-name=a2n-server --port=5674
    wait_for a2n.log '^server main loop starting$' "the server to start"
    s=$(port_of rtpM S)
    dump "$s" keep.txt # wants the session
    wait_for a2n.log '^invitation accepted$' "the server's session"
    wait_for m.log 'session opened: "a2n-server" at 127.0.0.1:5674' "M to log the session"
    up_and_down "$s"
    stop_started
    echo "midi2: c: PASS"
}

# --- r: an RTP-MIDI peer through a hub
check_r() {
    ./rtpmidid -v --no-mdns -b 127.0.0.1 -n H --alsa-name rtpH -p 7004 --midi2-port 5675 --hub >hub.log 2>&1 &
    started $!
    wait_for hub.log 'listening as "H" on UDP port 5675' "H's Network MIDI 2.0 host"
    ./rtpmidid -v --no-mdns --no-midi2 -b 127.0.0.1 -n B --alsa-name rtpB -p 8004 -C H@127.0.0.1:7004 >b.log 2>&1 &
    started $!
    wait_until "B's port \"H\"" has_port rtpB H
    h=$(port_of rtpB H)
    dump "$h" keep.txt # wants B's session with H
    wait_for hub.log 'session opened: "B" at 127.0.0.1:8004' "H to log the session from B"
    a2n amidi2net-client --ep-name=a2n-hub 127.0.0.1 5675
    wait_for a2n.log '^invitation accepted$' "the client's session"
    wait_for hub.log 'session opened: "a2n-hub"' "H to log the session from amidi2net"
    up_and_down "$h"
    stop_started
    echo "midi2: r: PASS"
}

# --- l: SysEx with a hole
# M's socket on 5673 (hex 1629): datagrams dropped for want of room; whether any wait.
drops() { awk '$2 == "0100007F:1629" { print $NF }' /proc/net/udp; }
all_read() { awk '$2 == "0100007F:1629" { split($5, q, ":"); e = q[2] != "00000000" } END { exit e }' /proc/net/udp; }
# amidi2net (--debug --debug) has sent N UMPs in all, and after them its last zero-length
# command (it sends FEC count + 1 of them when it has nothing more to send).
sent_all() { # N
    awk -v n="$1" '/^send ump: / { u++ } u >= n && /^send zero-length UMP #4$/ { f = 1 } END { exit !f }' a2n.log
}
losses_at_least() { [ "$(grep -c 'packet(s) from a2n-lossy lost' m.log)" -ge "$1" ]; }
# One SysEx with a hole: HEAD (its first packets) is sent while M is stopped, so its socket
# fills and drops the rest and the zero-length commands after them; M goes on and reads what
# its socket holds, knowing of no gap. END goes into its socket whole before M reads any of
# it, so what tells of the gap (END's numbers, amidi2net's answer to the retransmit request)
# reaches M after all of END. Sets dropped: how many datagrams the socket dropped.
sysex_with_hole() { # HEAD END ROUND
    before=$(drops)
    kill -STOP "$m_pid"
    cat "$1" >&3
    sent=$((sent + $(wc -l <"$1")))
    wait_until "amidi2net to send the SysEx's head" sent_all "$sent"
    dropped=$(($(drops) - before))
    kill -CONT "$m_pid"
    wait_until "M to read what its socket holds" all_read
    kill -STOP "$m_pid"
    cat "$2" >&3
    sent=$((sent + $(wc -l <"$2")))
    wait_until "amidi2net to send the SysEx's end" sent_all "$sent"
    kill -CONT "$m_pid"
    wait_until "M to give the gap up" losses_at_least "$3"
}
check_l() {
    a2n amidi2net-client --debug --ep-name=a2n-lossy 127.0.0.1 5673
    wait_for a2n.log '^invitation accepted$' "the client's session"
    wait_until "M's port \"a2n-lossy\"" has_port rtpM a2n-lossy
    dump "$(port_of rtpM a2n-lossy)" lossy.txt
    sent=0
    echo 20903c64 >&3 # note on
    # 1: the SysEx but its last 67 packets, then those: the socket drops 1000 and more, past
    # amidi2net's history of 64 for retransmission and M's 512 held after a gap.
    n=$(wc -l <lossy.ump)
    head -n $((n - 67)) lossy.ump >head1.ump
    tail -n 67 lossy.ump >end.ump
    sysex_with_hole head1.ump end.ump 1
    [ "$dropped" -ge 600 ] || fail "1: M's socket dropped $dropped datagrams, not 600"
    # 2: room in the socket was head1's length + 4 zero-length commands - dropped: a head
    # 200 longer loses 200 and M holds END after the gap until amidi2net's answer.
    room=$(($(wc -l <head1.ump) + 4 - dropped))
    head -n $((room + 200)) lossy.ump >head2.ump
    sysex_with_hole head2.ump end.ump 2
    [ "$dropped" -gt 64 ] && [ "$dropped" -lt 512 ] || fail "2: M's socket dropped $dropped datagrams, not 200"
    tail -n 2 up.ump >&3 # note off, note on ch 15
    after() { events lossy.txt | grep -q '^Note on 15'; }
    LIMIT=40 wait_until "the notes after the SysEx" after
    sleep 0.5
    joined lossy.txt >got.txt
    { head -n 1 want-up.txt; tail -n 2 want-up.txt; } >want.txt
    cmp -s got.txt want.txt || { diff want.txt got.txt | cut -c1-200; fail "events differ (a SysEx with a hole must be dropped)"; }
    stop_started
    lost=$(sed -n 's/.*\] \([0-9]*\) packet(s) from a2n-lossy lost$/\1/p' m.log | tr '\n' ' ' | sed 's/ $//; s/ / and /g')
    echo "midi2: l: PASS: two SysEx with a hole ($lost packets lost) dropped, the notes around them in order"
}

checks=${*:-h c r l}
./rtpmidid -v --no-mdns -b 127.0.0.1 -n M --alsa-name rtpM -p 5004 -C midi2://S@127.0.0.1:5674 >m.log 2>&1 &
m_pid=$!
wait_until "M's port \"S\"" has_port rtpM S
wait_for m.log 'listening as "M" on UDP port 5673' "M's Network MIDI 2.0 host"
# The reference: the MIDI 1.0 the UMP sent up translate to, dumped locally.
check=reference
dump 14:0 ref.txt
aplaymidi -p 14:0 up.mid || fail "aplaymidi into Midi Through failed"
n_up=$(($(grep -vc '^3' up.ump) + 1)) # the SysEx's packets (type 3) are one event
wait_until "$n_up events in the reference dump" joined_at_least ref.txt "$n_up"
stop_started
joined ref.txt >want-up.txt
failed=
for check in $checks; do
    rm -f started.pids
    if ! (check_$check); then failed="$failed $check"; fi
done
kill -TERM "$m_pid" 2>/dev/null || true
if [ -n "$failed" ]; then
    echo "midi2: FAIL:$failed"
    exit 1
fi
echo "midi2: PASS ($checks)"
