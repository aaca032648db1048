#!/bin/sh
# Discovery with a real ALSA sequencer, in the VM: two network namespaces joined by a veth pair,
# "Hub" (ALSA, mDNS) in X and "Studio" (--no-alsa, mDNS) in Y.
#   - Hub gets an ALSA port "Studio"; subscribing to it starts the session.
#   - Studio restarts within 10 s: the same port, one port; gone for longer: the port goes, and
#     comes back (one) with Studio.
#   - A local port connected to Network is announced as an export; disconnected, it says goodbye.
#   - Studio connects to Hub by itself: its session uses the port Hub has for it, no second one;
#     the port stays when that session ends.
#   - Hub's goodbye on SIGTERM.
#
# Usage: tests/vm/mdns.sh        (on the host: builds, boots the VM, runs --guest)
#        mdns.sh --guest         (inside the VM, next to the rtpmidid binary)
set -eu

if [ "${1:-}" != --guest ]; then
    here=$(cd "$(dirname "$0")" && pwd)
    (cd "$here/../.." && cargo build -q) || exit 1
    exec "$here/run.sh" --timeout 240 --copy "$0:mdns.sh" \
        --copy "$here/../../target/debug/rtpmidid:rtpmidid" -- /bin/sh mdns.sh --guest
fi

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
bad() { failed=$((failed + 1)); echo "FAIL $1"; }
# wait_for FILE PATTERN SECONDS (grep -E, polled every 0.2 s)
wait_for() {
    n=$(($3 * 5))
    while [ "$n" -gt 0 ]; do
        grep -Eq -- "$2" "$1" 2>/dev/null && return 0
        n=$((n - 1))
        sleep 0.2
    done
    return 1
}
# wait_count FILE PATTERN MORE_THAN SECONDS: until more than MORE_THAN lines match
wait_count() {
    n=$(($4 * 5))
    while [ "$n" -gt 0 ]; do
        [ "$(grep -Ec -- "$2" "$1" 2>/dev/null)" -gt "$3" ] && return 0
        n=$((n - 1))
        sleep 0.2
    done
    return 1
}
check_log() { # NAME FILE PATTERN SECONDS
    if wait_for "$2" "$3" "$4"; then ok "$1"; else bad "$1"; fi
}
# The port numbers of Hub's client named $1.
ports_named() {
    aconnect -l | awk -v c="$HUB" -v n="$1" '
        /^client / { inside = ($2 == c ":") }
        inside && $1 ~ /^[0-9]+$/ { name = $0; sub(/^[^\047]*\047/, "", name);
            sub(/ *\047.*$/, "", name); if (name == n) print $1 }'
}
wait_ports() { # NAME COUNT SECONDS: until exactly COUNT ports have that name
    n=$(($3 * 5))
    while [ "$n" -gt 0 ]; do
        [ "$(ports_named "$1" | wc -l)" -eq "$2" ] && return 0
        n=$((n - 1))
        sleep 0.2
    done
    return 1
}

ip netns add X
ip netns add Y
ip link add vx type veth peer name vy
ip link set vx netns X
ip link set vy netns Y
ip -n X addr add 169.254.60.1/16 dev vx
ip -n Y addr add 169.254.60.2/16 dev vy
for ns in X Y; do ip -n $ns link set lo up; done
ip -n X link set vx up
ip -n Y link set vy up

ip netns exec X ./rtpmidid -v -n Hub -b 169.254.60.1 >hub.log 2>&1 &
hub=$!
start_studio() { # extra options
    ip netns exec Y ./rtpmidid -v --no-alsa -n Studio -b 169.254.60.2 "$@" >>studio.log 2>&1 &
    studio=$!
}
start_studio

check_log "Hub finds Studio" hub.log 'peer "Studio" appeared at 169.254.60.2:5004' 30
HUB=$(aconnect -l | sed -n "s/^client \([0-9]*\): 'rtpmidid'.*/\1/p")
if wait_ports Studio 1 10; then ok "Hub has one ALSA port Studio"; else bad "Hub has one ALSA port Studio"; fi
port=$(ports_named Studio)
echo "     Hub is client $HUB, Studio its port $port"

aconnect 14:0 "$HUB:$port"
check_log "subscribing starts the session" hub.log 'session opened: "Studio"' 30
check_log "Studio sees Hub" studio.log 'session opened: "Hub"' 10

kill -TERM $studio
check_log "Hub sees Studio's goodbye" hub.log 'peer "Studio" gone' 15
start_studio
if wait_count hub.log 'peer "Studio" appeared' 1 30; then ok "Studio is back"; else bad "Studio is back"; fi
if wait_ports Studio 1 1 && [ "$(ports_named Studio)" = "$port" ]; then
    ok "back within 10 s: the same port, one"
else
    bad "back within 10 s: the same port, one ($(ports_named Studio | tr '\n' ' '))"
fi
# Still subscribed: the client reconnects to the restarted Studio.
if wait_count studio.log 'session opened: "Hub"' 1 40; then ok "the session comes back"; else bad "the session comes back"; fi

kill -TERM $studio
if wait_ports Studio 0 25; then ok "gone for longer than 10 s: the port goes"; else bad "gone for longer than 10 s: the port goes"; fi
start_studio
if wait_ports Studio 1 30; then ok "and comes back with Studio, one port"; else bad "and comes back with Studio, one port"; fi

# An export: Midi Through connected to Hub's Network port (port 0).
aconnect 14:0 "$HUB:0"
check_log "the export is announced" hub.log 'announced as "Hub Midi Through[^"]*" on vx' 30
check_log "Studio finds the export" studio.log 'peer "Hub Midi Through[^"]*" appeared' 30
aconnect -d 14:0 "$HUB:0"
check_log "the withdrawn export says goodbye" studio.log 'peer "Hub Midi Through[^"]*" gone' 15

# Studio, restarted, connects to Hub by itself (no ALSA: at once).
port=$(ports_named Studio)
kill -TERM $studio
wait $studio 2>/dev/null || true
opened=$(grep -c 'session opened: "Studio"' hub.log || true)
closed=$(grep -c 'session closed: Studio:' hub.log || true)
start_studio --connect Hub@169.254.60.1:5004
if wait_count hub.log 'session opened: "Studio"' "$opened" 30; then ok "Studio connects to Hub"; else bad "Studio connects to Hub"; fi
check_log "its session shares Studio's port" hub.log '"Studio" connected to us: its session shares' 5
if wait_ports Studio 1 1 && [ "$(ports_named Studio)" = "$port" ]; then
    ok "still the one port Studio"
else
    bad "still the one port Studio ($(ports_named Studio | tr '\n' ' '))"
fi
kill -TERM $studio
wait $studio 2>/dev/null || true
if wait_count hub.log 'session closed: Studio:' "$closed" 15; then ok "Studio's session ends"; else bad "Studio's session ends"; fi
if [ "$(ports_named Studio)" = "$port" ]; then ok "and the port stays"; else bad "and the port stays"; fi
seen=$(grep -c 'peer "Hub" appeared' studio.log || true)
start_studio
if wait_count studio.log 'peer "Hub" appeared' "$seen" 30; then ok "Studio finds Hub again"; else bad "Studio finds Hub again"; fi

kill -TERM $hub
check_log "Studio sees Hub's goodbye" studio.log 'peer "Hub" gone' 15
kill -TERM $studio 2>/dev/null || true
sleep 0.5

if [ "$failed" -gt 0 ]; then
    echo "--- hub.log"; tail -n 40 hub.log
    echo "--- studio.log"; tail -n 40 studio.log
    echo "--- aconnect -l"; aconnect -l
fi
echo "vm mdns: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
