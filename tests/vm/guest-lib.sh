# Shell functions the VM checks share (sourced inside the guest, busybox sh). Each script
# defines its own fail(), which these call.

# Seconds since boot, with fractions (busybox date has no %N).
now() { cut -d' ' -f1 /proc/uptime; }
# Polls COMMAND until it succeeds; fails the check after LIMIT (default 20) seconds.
wait_until() { # WHAT COMMAND...
    what=$1
    shift
    deadline=$(awk -v t="$(now)" -v l="${LIMIT:-20}" 'BEGIN { print t + l }')
    until "$@"; do
        awk -v t="$(now)" -v d="$deadline" 'BEGIN { exit !(t > d) }' && fail "timed out waiting for $what"
        sleep 0.05
    done
}
wait_for() { wait_until "$3" grep -qs "$2" "$1"; } # FILE PATTERN WHAT
# Background processes of the current check, killed when it ends.
started() { echo "$1" >>started.pids; }
stop_started() {
    [ -f started.pids ] || return 0
    for p in $(cat started.pids); do kill "$p" 2>/dev/null || true; done
    for p in $(cat started.pids); do wait "$p" 2>/dev/null || true; done
    rm -f started.pids
}

# The address CLIENT:PORT of the port named PORT of the client named CLIENT, one line per match.
port_of() { # CLIENT PORT
    aconnect -l | awk -v c="$1" -v p="$2" '
        /^client / { q = index($0, "\047"); rest = substr($0, q + 1); name = substr(rest, 1, index(rest, "\047") - 1)
                     id = $2; sub(":", "", id) }
        /^    [0-9]+ \047/ { q = index($0, "\047"); rest = substr($0, q + 1); pn = substr(rest, 1, index(rest, "\047") - 1)
                     sub(/ +$/, "", pn); if (name == c && pn == p) print id ":" $1 }'
}
has_port() { [ "$(port_of "$1" "$2" | wc -l)" -eq 1 ]; }
no_port() { [ -z "$(port_of "$1" "$2")" ]; }
# Whether ADDR has a subscriber.
subscribed_to() { aconnect -l | awk -v a="$1" '
    /^client / { id = $2; sub(":", "", id) }
    /^    [0-9]+ \047/ { cur = id ":" $1 }
    /Connecting To:/ && cur == a { found = 1 }
    END { exit !found }'; }
# aseqdump's events without the source column, spaces squeezed; subscription notices are not
# MIDI (a dump still running when a port goes shows one) and are left out.
events() {
    sed -n 's/^ *[0-9][0-9]*:[0-9][0-9]* *//p' "$1" | sed 's/  */ /g' |
        grep -v '^Port \(un\)\{0,1\}subscribed' || true
}
count_at_least() { [ "$(events "$1" | wc -l)" -ge "$2" ]; } # DUMP N
