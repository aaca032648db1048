#!/usr/bin/env bash
# A name lookup that never gets an answer leaves MIDI alone. In a network namespace of its own,
# whose resolv.conf (`ip netns exec` mounts /etc/netns/NAME/ over /etc) names a nameserver that
# takes queries and answers none, a --hub daemon keeps trying to --connect to host names while
# notes stream through its hub at 100 a second; their latency stays that of the same daemon
# with nothing to look up. (The system resolver once blocked the loop for seconds per try.)
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q
BIN=$PWD/target/debug/rtpmidid
NS=rtmdns$$
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "/etc/netns/$NS" "$tmp"
}
trap cleanup EXIT
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
mkdir -p "/etc/netns/$NS"
printf 'nameserver 127.0.0.53\noptions timeout:1 attempts:2\n' >"/etc/netns/$NS/resolv.conf"
ip netns exec "$NS" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.53", 53))
while True:
    s.recvfrom(4096)
' &
pids+=($!)

# One run: the daemon with ARGS, notes through its hub for 15 s; prints the latency figures.
measure() {
    local log=$1
    shift
    ip netns exec "$NS" "$BIN" -v --no-alsa --no-mdns --no-midi2 --hub -b 127.0.0.1 -p 5004 \
        --control "$tmp/control.sock" "$@" >"$log" 2>&1 &
    local pid=$!
    pids+=($pid)
    for _ in $(seq 100); do [ -S "$tmp/control.sock" ] && break; sleep 0.1; done
    ip netns exec "$NS" python3 tests/soak/peer.py latency 127.0.0.1:5004 --seconds 15 --rate 100
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

quiet=$(measure "$tmp/quiet.log" || true)
echo "dns: nothing to look up:         $quiet"
lookups=$(measure "$tmp/lookups.log" -C piano.stage.example:5004 -C drums@drums.stage.example:5004 ||
    true)
echo "dns: lookups that never resolve: $lookups"
failures=$(grep -c 'cannot resolve' "$tmp/lookups.log" || true)
echo "dns: failed lookups meanwhile:   $failures"
python3 - "$quiet" "$lookups" "$failures" <<'PY'
import json, sys
def figures(text, name):
    if not text.strip():
        print("dns: FAIL: %s: no figures (the daemon did not take the sessions in time)" % name)
        print("dns: FAILED")
        sys.exit(1)
    return json.loads(text)
quiet, lookups = figures(sys.argv[1], "quiet"), figures(sys.argv[2], "lookups")
failures = int(sys.argv[3])
problems = []
if failures < 2:
    problems.append("the daemon did not keep looking the names up (%d failures)" % failures)
for name, run in (("quiet", quiet), ("lookups", lookups)):
    if run["received"] != run["sent"]:
        problems.append("%s: %d of %d notes arrived" % (name, run["received"], run["sent"]))
# Generous bounds: a blocked loop shows seconds, not milliseconds.
if lookups["max_ms"] > max(100.0, 10 * quiet["max_ms"]):
    problems.append("a note waited %.1f ms while names were looked up" % lookups["max_ms"])
if lookups["p99_ms"] > quiet["p99_ms"] + 20.0:
    problems.append("p99 %.1f ms with lookups, %.1f ms without" % (lookups["p99_ms"], quiet["p99_ms"]))
for p in problems:
    print("dns: FAIL:", p)
print("dns: PASS" if not problems else "dns: FAILED")
sys.exit(1 if problems else 0)
PY
