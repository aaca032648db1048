#!/usr/bin/env bash
# Static release binaries made by contrib/build-static.sh: x86_64 run natively, aarch64 under
# qemu-user (STATIC_ARCHS="x86_64 aarch64 armhf" to add armhf). For each: `file` says it is
# statically linked, --version works, and two instances hold a loopback session
# (--no-alsa --no-mdns), seen through `rtpmidid ctl peers`; libasound is linked in, and the
# x86_64 daemon with ALSA on opens the kernel sequencer in the ALSA VM (tests/vm) and exports a
# port with `ctl export` and withdraws it with `ctl unexport`. alsa-lib is built once into .static-cache/; later runs only
# rebuild what cargo finds changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
archs=${STATIC_ARCHS:-x86_64 aarch64}

if [ "$archs" != x86_64 ] && ! command -v qemu-aarch64 >/dev/null; then
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$((30000 + ($$ % 1000) * 8))
for arch in $archs; do
  case $arch in
    x86_64) run=() ;;
    aarch64) run=(qemu-aarch64) ;;
    armhf) run=(qemu-arm) ;;
  esac
  bin=$(bash contrib/build-static.sh "$arch" | tail -n1)
  echo "$arch: $(file -b "$bin" | cut -d, -f1-6)"
  file -b "$bin" | grep -Eq 'statically linked|static-pie linked' \
    || { echo "$arch: not a static binary"; exit 1; }
  "${run[@]}" "$bin" --version | grep -q '^rtpmidid ' || { echo "$arch: --version failed"; exit 1; }

  a=$tmp/$arch-a.sock b=$tmp/$arch-b.sock
  "${run[@]}" "$bin" --no-alsa --no-mdns -v -b 127.0.0.1 -p "$port" -n "A-$arch" \
    --control "$a" 2>"$tmp/$arch-a.log" &
  pids+=($!)
  "${run[@]}" "$bin" --no-alsa --no-mdns -v -b 127.0.0.1 -p $((port + 2)) -n "B-$arch" \
    --control "$b" -C "127.0.0.1:$port" 2>"$tmp/$arch-b.log" &
  pids+=($!)
  port=$((port + 4))
  # Poll until B (the initiator) sees A connected and clock-synced (a latency is shown), and
  # A sees B; 30 s at most.
  deadline=$((SECONDS + 30))
  until "${run[@]}" "$bin" ctl --control "$b" --json peers 2>/dev/null \
      | grep -q "\"name\":\"A-$arch\"[^}]*\"state\":\"connected\"[^}]*\"latency_ms\":[0-9]" \
    && "${run[@]}" "$bin" ctl --control "$a" --json peers 2>/dev/null \
      | grep -q "\"name\":\"B-$arch\"[^}]*\"state\":\"connected\""; do
    if [ $SECONDS -ge $deadline ]; then
      echo "$arch: no session within 30 s"; cat "$tmp/$arch-a.log" "$tmp/$arch-b.log"; exit 1
    fi
    sleep 0.2
  done
  "${run[@]}" "$bin" ctl --control "$b" peers
  grep -q snd_seq_open "$bin" || { echo "$arch: libasound is not linked in"; exit 1; }
  echo "$arch: libasound is linked in"
  if [ "$arch" = x86_64 ]; then
    # The static daemon with ALSA on, on a real kernel sequencer in the ALSA VM (tests/vm): its
    # sequencer client appears and `ctl status` says ALSA is on.
    vm_out=$(timeout 180 bash tests/vm/run.sh --copy "$bin:rtpmidid" --timeout 60 -- sh -c '
      ./rtpmidid --no-mdns -b 127.0.0.1 -p 5004 --control ./c.sock -n vm 2>./log & pid=$!
      i=0
      until aconnect -l | grep -q rtpmidid && ./rtpmidid ctl --control ./c.sock status; do
        i=$((i + 1)); [ $i -gt 100 ] && break; sleep 0.1
      done
      aconnect -l
      # ctl export connects Midi Through (14:0) to the Network port both ways; unexport undoes it.
      ./rtpmidid ctl --control ./c.sock export 14:0
      aconnect -l | grep -q "Connecting To: 14:0" && echo "connected to 14:0"
      ./rtpmidid ctl --control ./c.sock status | grep "^exports"
      ./rtpmidid ctl --control ./c.sock unexport 14:0
      ./rtpmidid ctl --control ./c.sock status | sed "s/^exports:/after unexport:/" | grep "^after"
      kill $pid; wait $pid; cat ./log' 2>&1) || true
    echo "$vm_out" | grep -q "client 1[0-9][0-9]: .rtpmidid" \
      && echo "$vm_out" | grep -q "^alsa: *true" \
      && echo "$vm_out" | grep -q "^exporting 14:0 as vm Midi Through" \
      && echo "$vm_out" | grep -q "^connected to 14:0" \
      && echo "$vm_out" | grep -q "^exports: *1" \
      && echo "$vm_out" | grep -q "^after unexport: *0" \
      || { echo "$arch: the static daemon in the ALSA VM:"; echo "$vm_out"; exit 1; }
    echo "$arch: the static daemon opened the kernel sequencer in the ALSA VM, exported 14:0 and withdrew it"
  fi
  echo "$arch: static binary holds a loopback session"
done
