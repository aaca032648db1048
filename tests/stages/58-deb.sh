#!/usr/bin/env bash
# The Debian packages of contrib/build-deb.sh, for real. amd64: lintian finds no error, the
# packaged unit passes `systemd-analyze verify`; in a fresh Debian root (debootstrap minbase,
# cached in target/debootstrap/) it installs with `dpkg -i`, creates the user rtpmidid in group
# audio, the daemon starts from the unit's ExecStart as that user (plus --no-alsa --no-mdns and
# a test socket) and `rtpmidid ctl status` answers, and `dpkg --purge` leaves no file behind.
# Then the takeover: over a stand-in for the C++ rtpmidid package (same name, its default.ini
# as a conffile) ours installs, converts default.ini into rtpmidid.conf, and the daemon starts
# from it. arm64, armhf: lintian, and the packaged binary prints --version under
# qemu-user-static. DEB_ARCHS="amd64" builds only that one.
#
# Everything in the root runs in a network namespace of its own (loopback only): no packet of
# the daemon, nor of a service a maintainer script might start, reaches the host's network.
set -euo pipefail
cd "$(dirname "$0")/../.."
top=$PWD

need=()
for p in debootstrap lintian qemu-user-static iproute2; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

archs=${DEB_ARCHS:-amd64 arm64 armhf}
mapfile -t debs < <(bash contrib/build-deb.sh $archs | grep '\.deb$')
for deb in "${debs[@]}"; do
  echo "built $(basename "$deb"): $(dpkg-deb -f "$deb" Version) $(dpkg-deb -f "$deb" Architecture), $(du -k "$deb" | cut -f1) KiB"
  # --fail-on error: warnings are reported but do not fail the stage.
  lintian --fail-on error "$deb" | sed 's/^/  lintian: /'
  echo "  lintian: no errors"
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# arm64 and armhf: the packaged binary itself, under qemu-user.
for deb in "${debs[@]}"; do
  case $(dpkg-deb -f "$deb" Architecture) in
    arm64) qemu=qemu-aarch64-static ;;
    armhf) qemu=qemu-arm-static ;;
    *) continue ;;
  esac
  dir=$tmp/$(basename "$deb" .deb)
  dpkg-deb -x "$deb" "$dir"
  out=$("$qemu" "$dir/usr/bin/rtpmidid" --version)
  echo "$out" | grep -q '^rtpmidid ' || { echo "$deb: --version under $qemu: $out"; exit 1; }
  echo "$(basename "$deb"): $qemu: $out ($(file -b "$dir/usr/bin/rtpmidid" | cut -d, -f1-2))"
done

amd64=$(printf '%s\n' "${debs[@]}" | grep '_amd64\.deb$' || true)
[ -n "$amd64" ] || { echo "no amd64 package: skipping the install test"; exit 0; }

# The packaged unit passes systemd's own check (pointed at the packaged binary).
command -v systemd-analyze >/dev/null \
  || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
dpkg-deb -x "$amd64" "$tmp/amd64"
sed "s#/usr/bin/rtpmidid#$tmp/amd64/usr/bin/rtpmidid#" "$tmp/amd64/usr/lib/systemd/system/rtpmidid.service" \
  >"$tmp/rtpmidid.service"
# --man=no: the man page it names is in the package, not on this machine.
out=$(systemd-analyze verify --man=no "$tmp/rtpmidid.service" 2>&1) && [ -z "$out" ] \
  || { echo "packaged unit: $out"; exit 1; }
echo "packaged unit: systemd-analyze verify ok"

# A fresh Debian root: debootstrap once (the mirror apt uses here), then a copy of it per run.
cache=$top/target/debootstrap/bookworm-minbase.tar
if [ ! -f "$cache" ]; then
  # Either file may be missing (grep then fails even with matches from the other).
  mirror=$({ grep -rhoE '^(URIs:|deb) +https?://[^ ]*/debian/?( |$)' /etc/apt/sources.list \
             /etc/apt/sources.list.d/ 2>/dev/null || true; } | awk '{print $2}' | head -n1)
  echo "debootstrap bookworm from ${mirror:=http://deb.debian.org/debian} (once; cached in $cache)"
  mkdir -p "$(dirname "$cache")"
  debootstrap --variant=minbase --include=adduser,libasound2 bookworm "$tmp/boot" "$mirror" \
    >"$tmp/debootstrap.log" 2>&1 || { tail -n 20 "$tmp/debootstrap.log"; exit 1; }
  tar -C "$tmp/boot" -cf "$cache.part" . && mv "$cache.part" "$cache"
  rm -rf "$tmp/boot"
fi
root=$tmp/root
mkdir "$root" && tar -C "$root" -xf "$cache"
# No service starts from a maintainer script in this root (as in any chroot).
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d" && chmod 755 "$root/usr/sbin/policy-rc.d"
cp "$amd64" "$root/tmp/rtpmidid.deb"
cp tests/upstream/default.ini "$root/tmp/default.ini"

# A stand-in for the C++ rtpmidid package: its name, a version without epoch, its INI file
# as a conffile and its user (a group of its own, audio besides), as its postinst makes it.
old=$tmp/old
mkdir -p "$old/DEBIAN" "$old/usr/bin" "$old/etc/rtpmidid"
printf '#!/bin/sh\necho "C++ rtpmidid"\n' >"$old/usr/bin/rtpmidid" && chmod 755 "$old/usr/bin/rtpmidid"
cp tests/upstream/default.ini "$old/etc/rtpmidid/default.ini"
echo /etc/rtpmidid/default.ini >"$old/DEBIAN/conffiles"
cat >"$old/DEBIAN/control" <<'EOF'
Package: rtpmidid
Version: 23.12
Architecture: amd64
Maintainer: test <test@example.org>
Depends: adduser
Description: stand-in for the C++ rtpmidid package
EOF
printf '#!/bin/sh\nset -e\n[ "$1" = configure ] || exit 0\nadduser --disabled-password --quiet --system --home /run/rtpmidid --no-create-home --group rtpmidid\nadduser --quiet rtpmidid audio\n' \
  >"$old/DEBIAN/postinst" && chmod 755 "$old/DEBIAN/postinst"
dpkg-deb --root-owner-group -b "$old" "$root/tmp/old.deb" >/dev/null

# What runs inside the root, as root, in its own network namespace.
cat >"$root/tmp/test.sh" <<'EOF'
set -eu
unit=/usr/lib/systemd/system/rtpmidid.service
listing() {
  find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /tmp -o -path /run \
    -o -path /var/lib/dpkg -o -path /var/log/dpkg.log -o -path /var/log/alternatives.log \
    -o -path /var/cache/debconf \) -prune -o -print \
    | grep -Ev '^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$' | sort
}
# Starts the daemon from the unit's ExecStart (its --control made the test socket) as the
# unit's user and group, in the runtime folder systemd would make, and waits for `ctl status`
# to answer. Extra arguments follow.
start() {
  cmd=$(sed -n 's/^ExecStart=//p' $unit | sed 's#--control [^ ]*#--control /run/rtpmidid/test.sock#')
  user=$(sed -n 's/^User=//p' $unit) group=$(sed -n 's/^Group=//p' $unit)
  install -d -o "$user" -g "$group" -m 0750 /run/rtpmidid
  case $cmd in *test.sock*) ;; *) echo "no --control in ExecStart: $cmd"; exit 1 ;; esac
  setpriv --reuid "$user" --regid "$group" --init-groups $cmd --no-alsa --no-mdns "$@" \
    2>/tmp/daemon.log &
  pid=$!
  i=0
  until rtpmidid ctl --control /run/rtpmidid/test.sock status >/tmp/status 2>&1; do
    i=$((i + 1))
    if [ $i -gt 100 ]; then cat /tmp/status /tmp/daemon.log; exit 1; fi
    sleep 0.1
  done
  echo "daemon: $cmd --no-alsa --no-mdns $*"
  echo "  runs as $(stat -c %U /proc/$pid):$(stat -c %G /proc/$pid); ctl status says:"
  sed 's/^/    /' /tmp/status
  [ "$(stat -c %U /proc/$pid)" = "$user" ]
}
# dpkg, failing on a shell error in a maintainer script too (`postinst: 33: x: not found`).
dpkg_ok() {
  dpkg "$@" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }
  if grep -E '(inst|rm): [0-9]+: ' /tmp/dpkg.log; then exit 1; fi
}
stop() {
  kill "$pid"; wait "$pid" || true
  rm -rf /run/rtpmidid   # as systemd does with RuntimeDirectory
}

listing >/tmp/before
dpkg_ok -i /tmp/rtpmidid.deb
echo "installed $(dpkg-query -W -f='${Package} ${Version}' rtpmidid)"
id rtpmidid
id -gn rtpmidid | grep -qx audio
dpkg-query -W -f='${Conffiles}\n' rtpmidid | grep -q '^ /etc/rtpmidid/rtpmidid.conf '
dpkg-query -W -f='${Conffiles}\n' rtpmidid | grep -q '^ /etc/init.d/rtpmidid '
echo "conffiles: $(dpkg-query -W -f='${Conffiles}' rtpmidid | awk 'NF {printf "%s ", $1}')"
ls /usr/share/man/man8/rtpmidid.8.gz /usr/share/man/man5/rtpmidid.conf.5.gz >/dev/null
start
stop
dpkg_ok --purge rtpmidid
listing >/tmp/after
if ! diff /tmp/before /tmp/after; then echo "dpkg --purge left the above behind"; exit 1; fi
echo "purged: no file left behind; the user stays (Debian keeps system users): $(id rtpmidid)"
userdel rtpmidid

echo "--- takeover from the C++ rtpmidid package"
dpkg_ok -i /tmp/old.deb
echo "installed $(dpkg-query -W -f='${Package} ${Version}' rtpmidid): $(rtpmidid)"
dpkg_ok -i /tmp/rtpmidid.deb
sed 's/^/  dpkg: /' /tmp/dpkg.log | grep -v 'Reading database'
echo "upgraded to $(dpkg-query -W -f='${Version}' rtpmidid)"
id -nG rtpmidid | grep -qw audio
grep -q '^\[connect DeepMind12D\]' /etc/rtpmidid/rtpmidid.conf
start
rtpmidid ctl --control /run/rtpmidid/test.sock peers
rtpmidid ctl --control /run/rtpmidid/test.sock --json peers | grep -q '"connection":"DeepMind12D"'
stop
dpkg_ok --purge rtpmidid
[ ! -e /etc/rtpmidid ] || { ls -la /etc/rtpmidid; echo "purge left /etc/rtpmidid"; exit 1; }
echo "purged: /etc/rtpmidid is gone, default.ini with it"
EOF

unshare --net --mount --fork sh -c '
  set -e
  ip link set lo up
  mount -t proc proc "$1/proc"
  exec chroot "$1" /bin/sh /tmp/test.sh' sh "$root"
