#!/usr/bin/env bash
# Wireshark cross-check: decodes the packets protocol/examples/emit_vectors.rs emits with
# tshark's applemidi, rtp and rtpmidi dissectors and fails when
#   - a packet is malformed or carries an expert error,
#   - a packet is not dissected as the protocol its line names (`kind` in frame.protocols),
#   - the applemidi/rtpmidi dissector finds bytes it could not place (`*.unknown_data`),
#   - a decoded field differs from the value the line gives, or a required field is missing.
# Line format and value rules: see the top of protocol/examples/emit_vectors.rs.
# TSHARK_VECTORS=FILE checks FILE instead of the example's output.
# Installs tshark (Debian package) when it is missing. Offline: pcaps are made with text2pcap.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

if ! command -v tshark >/dev/null || ! command -v text2pcap >/dev/null; then
    # tshark asks whether non-root users may capture; answer before installing.
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
        as_root debconf-set-selections
    as_root apt-get update || true # an unreachable third-party source is not fatal
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends tshark
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cd "$root"
if [ -n "${TSHARK_VECTORS:-}" ]; then
    cp "$TSHARK_VECTORS" "$work/vectors.txt" # a hand-made file, to check this script itself
else
    cargo run -q -p rtpmidid-protocol --example emit_vectors >"$work/vectors.txt"
fi

# Fields each kind must list, so a vector cannot pass by checking nothing.
required_fields() {
    case $1 in
    applemidi) echo "applemidi.command applemidi.sender_ssrc" ;;
    rtp) echo "rtp.seq rtp.timestamp rtp.ssrc" ;;
    rtpmidi) echo "rtp.seq rtp.timestamp" ;;
    *) echo "" ;;
    esac
}

# Numbers (decimal or 0x hex) become lowercase hex without leading zeros; booleans 0/1.
normalize_one() {
    local v=$1 h
    case $v in
    True | true) v=1 ;;
    False | false) v=0 ;;
    esac
    if [[ $v =~ ^0[xX]([0-9a-fA-F]+)$ ]]; then
        h=${BASH_REMATCH[1],,}
        h=${h##+(0)}
        echo "0x${h:-0}"
    elif [[ $v =~ ^[0-9]+$ ]]; then
        h=${v##+(0)}
        printf '0x%x\n' "${h:-0}"
    else
        printf '%s\n' "$v"
    fi
}

# A field with several occurrences is compared element by element (tshark joins them by ',').
normalize() {
    local out=() part
    local IFS=,
    for part in $1; do out+=("$(normalize_one "$part")"); done
    printf '%s\n' "${out[*]}"
}

shopt -s extglob

# Hex string to the offset/bytes dump text2pcap reads; offset 0 starts a new packet.
dump() {
    local hex=$1 i
    for ((i = 0; i < ${#hex}; i += 32)); do
        printf '%06x %s\n' $((i / 2)) "$(printf '%s' "${hex:i:32}" | sed 's/../& /g')"
    done
}

tshark_opts=(-n -o rtp.heuristic_rtp:FALSE -o udp.try_heuristic_first:TRUE
    -d "udp.port==5004,rtp" -d "udp.port==5005,rtp" -d "rtp.pt==97,rtpmidi")

mapfile -t lines < <(grep -v -e '^#' -e '^$' "$work/vectors.txt")
if [ "${#lines[@]}" -eq 0 ]; then
    echo "tshark.sh: emit_vectors printed nothing" >&2
    exit 1
fi

failures=0
fail() {
    echo "FAIL: $*" >&2
    failures=$((failures + 1))
}

ports=$(for l in "${lines[@]}"; do read -r _ port _ <<<"$l"; echo "$port"; done | sort -un)
for port in $ports; do
    # The lines for this port, in order; frame N of the pcap is the N-th of them.
    idx=()
    for i in "${!lines[@]}"; do
        read -r _ p _ <<<"${lines[$i]}"
        [ "$p" = "$port" ] && idx+=("$i")
    done
    : >"$work/$port.txt"
    fields=(frame.protocols applemidi.unknown_data rtpmidi.unknown_data)
    for i in "${idx[@]}"; do
        read -r kind _ hex expects <<<"${lines[$i]}"
        dump "$hex" >>"$work/$port.txt"
        for kv in $expects $(required_fields "$kind"); do
            f=${kv%%=*}
            [[ " ${fields[*]} " == *" $f "* ]] || fields+=("$f")
        done
    done
    text2pcap -q -4 127.0.0.1,127.0.0.1 -u "$port,$port" "$work/$port.txt" "$work/$port.pcap" \
        >/dev/null 2>&1

    bad=$(tshark "${tshark_opts[@]}" -r "$work/$port.pcap" 2>/dev/null \
        -Y '_ws.malformed || _ws.expert.severity >= "error"' -T fields -e frame.number)
    for n in $bad; do
        fail "port $port frame $n malformed: ${lines[${idx[$((n - 1))]}]}"
        tshark "${tshark_opts[@]}" -r "$work/$port.pcap" -Y "frame.number == $n" -V 2>/dev/null |
            sed -n '/^User Datagram/,$p' >&2
    done

    efields=()
    for f in "${fields[@]}"; do efields+=(-e "$f"); done
    mapfile -t rows < <(tshark "${tshark_opts[@]}" -r "$work/$port.pcap" 2>/dev/null \
        -T fields -E separator=$'\x1f' -E occurrence=a -E aggregator=, "${efields[@]}")
    if [ "${#rows[@]}" -ne "${#idx[@]}" ]; then
        fail "port $port: ${#idx[@]} packets written, ${#rows[@]} frames decoded"
        continue
    fi

    for n in "${!idx[@]}"; do
        line=${lines[${idx[$n]}]}
        read -r kind _ _ expects <<<"$line"
        IFS=$'\x1f' read -r -a got <<<"${rows[$n]}"
        declare -A value=()
        for k in "${!fields[@]}"; do value[${fields[$k]}]=${got[$k]:-}; done

        [[ ":${value[frame.protocols]}:" == *":$kind:"* ]] ||
            fail "$kind not dissected (${value[frame.protocols]}): $line"
        for f in applemidi.unknown_data rtpmidi.unknown_data; do
            # Wireshark shows the data of middle and last SysEx segments as unknown data; a
            # vector that expects it lists the exact bytes.
            [ -z "${value[$f]}" ] || [[ " $expects " == *" $f="* ]] || fail "$f ${value[$f]}: $line"
        done
        for f in $(required_fields "$kind"); do
            [[ " $expects " == *" $f="* ]] || fail "vector does not list $f: $line"
        done
        for kv in $expects; do
            f=${kv%%=*}
            want=$(printf '%s' "${kv#*=}" | sed 's/%\([0-9A-Fa-f][0-9A-Fa-f]\)/\\x\1/g')
            want=$(printf '%b' "$want")
            if [ "$(normalize "$want")" != "$(normalize "${value[$f]}")" ]; then
                fail "$f: emitted '$want', tshark decoded '${value[$f]}': $line"
            fi
        done
        unset value
    done
done

if [ "$failures" -ne 0 ]; then
    echo "tshark.sh: $failures failure(s) in ${#lines[@]} packets" >&2
    exit 1
fi
echo "tshark.sh: ${#lines[@]} packets decoded by $(tshark --version 2>/dev/null | head -n1) as emitted"
