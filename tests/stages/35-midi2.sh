#!/usr/bin/env bash
# Network MIDI 2.0 (UDP) test rig: builds amidi2net (ALSA maintainer's server/client) with the
# test-only stdio I/O backend (tests/peers/amidi2net/build.sh, cached), then runs its self-test:
# amidi2net-client <-> amidi2net-server on 127.0.0.1, notes both ways without and with
# authentication (shared secret, user/password, wrong credentials rejected), FEC off, 1 in 10
# datagrams dropped, and a 10 kB SysEx (1707 UMP type 3 packets) each way.
# As root it runs inside a fresh network namespace (only lo, up); otherwise on the host's
# loopback. amidi2net is built without avahi: it never publishes mDNS.
# Ends with "N passed, M failed"; non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/../.."

bash tests/peers/amidi2net/build.sh >/dev/null || { echo "35-midi2: rig build failed"; echo "0 passed, 1 failed"; exit 1; }
command -v python3 >/dev/null || { echo "35-midi2: needs python3"; echo "0 passed, 1 failed"; exit 1; }

run=(python3 tests/peers/amidi2net/selftest.py "$@")
if [ "$(id -u)" = 0 ] && unshare --net true 2>/dev/null; then
    echo "35-midi2: self-test in a private network namespace (lo only)"
    exec unshare --net sh -c 'ip link set lo up && exec "$@"' sh "${run[@]}"
fi
echo "35-midi2: self-test on the host loopback"
exec "${run[@]}"
