#!/bin/sh
# The ALSA path beside aseqnet (issue 12 item 6), in one guest boot: events/s and latency from
# an ALSA application through a network bridge on the guest's loopback back to the same
# application, for
#   aseqnet:  app -> aseqnet client -> TCP -> aseqnet server -> app   (the baseline)
#   rtpmidid: app -> daemon A's port "B" -> RTP-MIDI (UDP) -> daemon B's port "A" -> app
# (release daemons, --no-mdns, wired as in bridge.sh). alsa_bench(.rs) measures both with the
# same stimulus, rounds alternating, and prints a table with the ratios rtpmidid/aseqnet.
#
# Usage: tests/vm/alsa_bench.sh [--quick | --profile] [--smp N]   (on the host: builds, boots)
#        alsa_bench.sh --guest [--profile] [ALSA_BENCH ARGS]     (inside the VM)
#   --quick: one short round (the test stage's; fails only if no number came out).
#   --profile: only the CPU runs, under the host's perf (cpu-clock, whole guest); prints where
#     the time went per process and object file, and in the daemon's own code.
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    repo=$(cd "$here/../.." && pwd)
    args="--rounds 5" timeout=900 smp=1 perf=
    while [ $# -gt 0 ]; do
        case $1 in
        --quick) args="--rounds 1 --latency-count 200 --trial-secs 0.3 --bisect 2 --cpu-secs 1" timeout=120; shift ;;
        --profile) args="--profile --rounds 1 --cpu-only --cpu-secs 5" timeout=300 perf="--copy $(command -v perf):perf"; shift ;;
        --smp) smp=$2; shift 2 ;;
        *) echo "usage: $0 [--quick | --profile] [--smp N]" >&2; exit 2 ;;
        esac
    done
    (cd "$repo" && cargo build -q --release --bin rtpmidid --example alsa_bench)
    target=${CARGO_TARGET_DIR:-$repo/target}/release
    echo "alsa_bench: guest with $smp vCPU(s), $(nproc) host CPU(s), load $(cut -d' ' -f1-3 /proc/loadavg)"
    # shellcheck disable=SC2086
    exec "$here/run.sh" --timeout "$timeout" --smp "$smp" --copy "$0:alsa_bench.sh" $perf \
        --copy "$here/guest-lib.sh:guest-lib.sh" \
        --copy "$target/rtpmidid:rtpmidid" --copy "$target/examples/alsa_bench:alsa_bench" \
        -- /bin/sh alsa_bench.sh --guest $args
fi
shift
. ./guest-lib.sh
profile=
[ "${1:-}" = --profile ] && { profile=1; shift; }

fail() {
    echo "alsa_bench: FAIL: $*"
    for f in a.log b.log server.log client.log; do [ -s $f ] && { echo "--- $f (tail)"; tail -n 15 $f | cut -c1-200; }; done
    stop_started
    exit 1
}
# The sequencer client of process PID (aseqnet names server and client both "Net Client").
client_of() { aconnect -l | sed -n "s/^client \([0-9]*\): .*pid=$1\].*/\1/p"; }
has_client() { [ -n "$(client_of "$1")" ]; }
# aseqnet's TCP port 40002 (9C42) listening.
listening() { grep -q ':9C42 00000000:0000 0A' /proc/net/tcp; }

echo "alsa_bench: guest $(grep -c '^processor' /proc/cpuinfo) vCPU(s), kernel $(uname -r)"
aseqnet >server.log 2>&1 &
server=$!
started $server
wait_until "the aseqnet server" listening
wait_until "the aseqnet server's client" has_client $server
aseqnet localhost >client.log 2>&1 &
client=$!
started $client
wait_until "the aseqnet client's client" has_client $client

# RTP-MIDI only: no Network MIDI 2.0 host; a control socket each.
./rtpmidid --no-mdns --no-midi2 --control a.sock -b 127.0.0.1 -n A --alsa-name rtpA -p 5004 >a.log 2>&1 &
a=$!
started $a
./rtpmidid --no-mdns --no-midi2 --control b.sock -b 127.0.0.1 -n B --alsa-name rtpB -p 6004 -C A@127.0.0.1:5004 >b.log 2>&1 &
b=$!
started $b
wait_until "B's port \"A\"" has_port rtpB A

# No polling while it runs: on one vCPU a polling shell delays what it measures. Every wait
# in alsa_bench is bounded, and run.sh's timeout bounds the whole.
# With --profile: cpu-clock samples of the whole guest, 1000 a second, no call graphs (the
# release daemon has no frame pointers).
${profile:+./perf record -q -a -e cpu-clock -F 1000 -N -o perf.data --} ./alsa_bench "$@" \
    "aseqnet=$(client_of $client):0,$(client_of $server):0,$client,$server" "rtpmidid=rtpA:B,rtpB:A,$a,$b" >bench.log 2>&1 ||
    { cat bench.log; fail "alsa_bench failed"; }
cat bench.log
if [ -n "$profile" ]; then
    echo "where the time went, per process:"
    report() { ./perf --no-pager report -i perf.data --stdio --stdio-color never -q "$@" 2>/dev/null | grep .; }
    report --sort comm --percent-limit 1
    echo "per process and object (shares of all samples):"
    report --sort comm,dso --percent-limit 0.5
    echo "in the daemon's own code (shares of its samples there):"
    report --comm rtpmidid --dso rtpmidid --percentage relative --sort sym --percent-limit 2
    stop_started
    exit 0
fi
# Where events were dropped: a client's kernel input pool that was full refused them.
echo "kernel input pools over the whole run (size, peak cells in use, failed allocations):"
awk '
    /^Client/ { name = $0; sub(/^[^"]*"/, "", name); sub(/".*/, "", name); id = $2; pool = 0 }
    /Input pool/ { pool = 1 }
    pool && /Pool size/ { size = $NF }
    pool && /Peak cells/ { peak = $NF }
    pool && /Alloc failures/ { if (name ~ /^(Net Client|rtpA|rtpB)$/) print "  " id " " name ": " size ", " peak ", " $NF }
' /proc/asound/seq/clients
# And whether the network dropped any (the daemons' UDP; aseqnet's TCP cannot).
awk '/^Udp:/ { if (!n++) split($0, name); else { out = "UDP errors in the guest:"
    for (i = 2; i <= NF; i++) if (name[i] ~ /^(InErrors|RcvbufErrors|SndbufErrors)$/) out = out " " name[i] " " $i
    print out } }' /proc/net/snmp
grep -q '^| zero-loss rate (events/s) | [0-9]' bench.log || fail "no zero-loss rate"
grep -q '^| latency .* p50 (µs) | [0-9]' bench.log || fail "no latency"
stop_started
echo "alsa_bench: PASS"
