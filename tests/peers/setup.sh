#!/usr/bin/env bash
# Installs the third-party RTP-MIDI peers for the end-to-end tests, when missing:
#   tests/peers/venv          Python venv with pymidi==0.5.0
#   tests/peers/node_modules  rtpmidi@1.0.0 as in package-lock.json, without its
#                             optional mDNS modules (native, they do not build here)
# Idempotent and silent when everything is in place. Installs python3/node from
# Debian packages only if they are absent.
set -euo pipefail

DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYMIDI_VERSION=0.5.0
RTPMIDI_VERSION=1.0.0

say() { echo "tests/peers/setup.sh: $*" >&2; }

have_pymidi() {
    [ -x "$DIR/venv/bin/python" ] && "$DIR/venv/bin/python" - "$PYMIDI_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib import metadata
sys.exit(metadata.version("pymidi") != sys.argv[1])
EOF
}

have_rtpmidi() {
    [ -f "$DIR/node_modules/rtpmidi/package.json" ] && [ -f "$DIR/node_modules/winston/package.json" ] &&
        command -v node >/dev/null &&
        [ "$(node -p "require('$DIR/node_modules/rtpmidi/package.json').version" 2>/dev/null)" = "$RTPMIDI_VERSION" ]
}

apt_install() {
    say "installing Debian packages: $*"
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if have_pymidi && have_rtpmidi; then
    exit 0
fi

# One installer at a time (parallel test runs would otherwise race on the venv).
exec 9>"${TMPDIR:-/tmp}/rtpmidid-test-peers-setup.lock"
flock 9

if ! have_pymidi; then
    if ! command -v python3 >/dev/null; then
        apt_install python3 python3-venv
    fi
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    say "creating venv with pymidi==$PYMIDI_VERSION"
    rm -rf "$DIR/venv"
    python3 -m venv "$DIR/venv"
    "$DIR/venv/bin/pip" install -q --disable-pip-version-check "pymidi==$PYMIDI_VERSION"
    have_pymidi || { say "pymidi $PYMIDI_VERSION did not install"; exit 1; }
fi

if ! have_rtpmidi; then
    if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
        apt_install nodejs npm
    fi
    say "installing rtpmidi@$RTPMIDI_VERSION (optional mDNS modules omitted)"
    # --omit=optional: 'mdns' and 'avahi_pub' are native and fail to build;
    # node_peer.js never publishes, so they are not needed. package.json
    # overrides avahi_pub (a GitHub dependency) with stubs/avahi_pub so that npm
    # never asks git for it. `npm ci` refuses this lock file (it lacks
    # avahi_pub), so `npm install`, which keeps the locked versions.
    (cd "$DIR" && npm install --omit=optional --no-audit --no-fund --loglevel=error >/dev/null)
    have_rtpmidi || { say "rtpmidi $RTPMIDI_VERSION did not install"; exit 1; }
fi
