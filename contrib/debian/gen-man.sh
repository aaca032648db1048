#!/usr/bin/env bash
# Writes the man pages rtpmidid.8 and rtpmidid.conf.5 into OUTDIR, each from the one place its
# text already lives, so nothing is written twice:
#   rtpmidid(8)      the options from `rtpmidid --help` (getopts' text in src/cli.rs), the
#                    control commands from `rtpmidid ctl --help`;
#   rtpmidid.conf(5) contrib/rtpmidid.conf.example, whose comments document every key (a unit
#                    test checks it against src/config/keys.rs, the table of keys).
#
#   bash contrib/debian/gen-man.sh RTPMIDID-BINARY OUTDIR
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$1 out=$2
mkdir -p "$out"
version=$("$bin" --version | awk '{print $2}')
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%d)

# roff-safe text: backslashes doubled, a leading . or ' escaped.
esc() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

{
  echo ".TH RTPMIDID 8 \"$date\" \"rtpmidid $version\" \"System Administration\""
  echo ".SH NAME"
  echo "rtpmidid \\- RTP-MIDI (AppleMIDI) network MIDI daemon with an ALSA sequencer bridge"
  echo ".SH SYNOPSIS"
  "$bin" --help | sed -n '/^Usage:/,/^$/p' | sed -e 's/^Usage: *//' -e 's/^ *//' -e '/^$/d' \
    | esc | sed 's/^/.br\n/' | sed '1d'
  cat <<'EOF'
.SH DESCRIPTION
.B rtpmidid
puts MIDI on the network with RTP-MIDI (RFC 6295) and the AppleMIDI session protocol that
macOS, iOS and Windows rtpMIDI speak. It bridges the ALSA sequencer to network peers, finds and
announces peers by mDNS, serves many sessions on one UDP port pair, and can act as a hub.
.PP
Each network session gets a port of the ALSA client
.BR rtpmidid ;
a local port connected to its
.B Network
port is offered to the network as a session of its own.
.SH OPTIONS
Options on the command line win over the configuration file.
EOF
  # getopts' help: an option line starts with 4 spaces and a dash (or 8 and --; mawk has no {n}); its text
  # follows after two spaces or on indented lines below.
  "$bin" --help | esc | sed -n '/^Options:/,$p' | sed 1d | awk '
    function flush() { if (opt != "") { print ".TP"; print "\\fB" opt "\\fR"; print text } opt = ""; text = "" }
    /^    (-|    --)/ {
      flush(); line = $0; sub(/^ +/, "", line)
      n = index(line, "  ")
      if (n > 0) { opt = substr(line, 1, n - 1); text = substr(line, n); sub(/^ +/, "", text) }
      else { opt = line; sub(/ +$/, "", opt) }
      next
    }
    { line = $0; sub(/^ +/, "", line); text = (text == "" ? line : text " " line) }
    END { flush() }'
  echo ".SH CONTROL"
  echo "The running daemon answers on its control socket; \\fBrtpmidid ctl\\fR is its client:"
  echo ".PP"
  echo ".nf"
  "$bin" ctl --help | esc
  echo ".fi"
  echo ".PP"
  echo "The socket serves root, the daemon's user and the members of the socket's group"
  echo "(\\fBaudio\\fR with the packaged service)."
  echo ".SH CONVERTING A CONFIGURATION"
  echo ".nf"
  "$bin" convert-config --help | esc
  echo ".fi"
  cat <<'EOF'
.SH FILES
.TP
.I /etc/rtpmidid/rtpmidid.conf
the configuration file, read at start and again when it changes; see
.BR rtpmidid.conf (5).
.TP
.I /run/rtpmidid/control.sock
the control socket.
.TP
.I /usr/share/doc/rtpmidid/README.md
how it behaves, how to connect from macOS, iOS and Windows, troubleshooting.
.SH SIGNALS
SIGHUP reads the configuration file again and applies the difference. SIGINT and SIGTERM end
every session with a goodbye to its peer and exit with status 0.
.SH EXIT STATUS
0 on a clean exit, 1 when the daemon cannot start (a broken configuration file, a port that
cannot be opened, no ALSA sequencer without \fB\-\-no\-alsa\fR), 2 for a bad command line.
.SH SEE ALSO
.BR rtpmidid.conf (5),
.BR aconnect (1)
EOF
} >"$out/rtpmidid.8"

# The example's first comment block is the file's description; then each "#[section]" is a
# section, each "#key = value" a key, described by the comment lines just above it.
{
  echo ".TH RTPMIDID.CONF 5 \"$date\" \"rtpmidid $version\" \"File Formats\""
  echo ".SH NAME"
  echo "rtpmidid.conf \\- configuration file of rtpmidid"
  echo ".SH DESCRIPTION"
  esc <contrib/rtpmidid.conf.example | awk '
    function para() { if (text != "") { print ".PP"; print text } text = "" }
    function flush_key() { if (key != "") { print ".TP"; print "\\fB" key "\\fR (e.g. \\fI" value "\\fR)"; print text; text = "" } key = "" }
    intro && /^$/ { para(); intro = 0; print ".SH SECTIONS"; next }
    intro && /^#$/ { para(); next }
    intro { sub(/^# ?/, ""); text = (text == "" ? $0 : text " " $0); next }
    /^#\[/ { flush_key(); h = $0; sub(/^#/, "", h); print ".SS \"" h "\""; para(); next }
    /^#[a-z_]+ = / { flush_key(); k = $0; sub(/^#/, "", k); key = k; sub(/ = .*/, "", key); value = k; sub(/^[^=]*= /, "", value); next }
    /^# / { if (key != "") flush_key(); sub(/^# /, ""); text = (text == "" ? $0 : text " " $0); next }
    /^$/ { flush_key() }
    END { flush_key() }
    BEGIN { intro = 1 }'
  cat <<'EOF'
.SH FILES
.I /etc/rtpmidid/rtpmidid.conf
.br
.I /usr/share/doc/rtpmidid/examples/rtpmidid.conf.example
.SH SEE ALSO
.BR rtpmidid (8)
EOF
} >"$out/rtpmidid.conf.5"
echo "$out/rtpmidid.8 $out/rtpmidid.conf.5"
