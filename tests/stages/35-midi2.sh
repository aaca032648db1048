#!/usr/bin/env bash
# Network MIDI 2.0 (UDP) against amidi2net (ALSA maintainer's server/client), on 127.0.0.1.
# Builds amidi2net with the test-only stdio I/O backend (tests/peers/amidi2net/build.sh,
# cached), then
#  1. the rig's self-test: amidi2net-client <-> amidi2net-server, notes both ways without and
#     with authentication (shared secret, user/password, wrong credentials rejected), FEC off,
#     1 in 10 datagrams dropped, and a 10 kB SysEx (1707 UMP type 3 packets) each way;
#  2. rtpmidid against it (tests/peers/amidi2net/test_daemon.py): the daemon as host and as
#     client (midi2://), bridged through --hub to an RTP-MIDI peer (pymidi_initiator): notes,
#     controllers, pitch bend, MIDI 2.0 messages, 10 kB SysEx and unpaced bursts both ways;
#     authentication as host and client ([midi2] auth/secret/users, [connect] user and
#     password, wrong ones refused); FEC and retransmission through a lossy relay; a tshark
#     capture of the RTP-MIDI leg.
# As root it runs inside a fresh network namespace (only lo, up); otherwise on the host's
# loopback. amidi2net is built without avahi and the daemon runs with --no-mdns: nothing
# publishes mDNS.
# Prints "N passed, M failed" for each part; non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

bash tests/peers/amidi2net/build.sh >/dev/null || { echo "35-midi2: rig build failed"; echo "0 passed, 1 failed"; exit 1; }
command -v python3 >/dev/null || { echo "35-midi2: needs python3"; echo "0 passed, 1 failed"; exit 1; }
bash tests/peers/setup.sh || { echo "35-midi2: peers setup failed"; echo "0 passed, 1 failed"; exit 1; }
cargo build -q || { echo "35-midi2: cargo build failed"; echo "0 passed, 1 failed"; exit 1; }

run='python3 tests/peers/amidi2net/selftest.py "$@"; a=$?
python3 tests/peers/amidi2net/test_daemon.py "$@"; b=$?
[ $a = 0 ] && [ $b = 0 ]'
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    echo "35-midi2: in a private network namespace (lo only)"
    exec unshare --net sh -c "ip link set lo up && $run" sh "$@"
fi
echo "35-midi2: on the host loopback"
exec sh -c "$run" sh "$@"
