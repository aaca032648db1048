#!/usr/bin/env bash
# Debian packages of rtpmidid:
#
#   bash contrib/build-deb.sh [amd64] [arm64] [armhf]      (default: all three)
#
# Run as root on a Debian (bookworm) amd64 machine the first time: it installs what it needs
# (cargo-deb, dpkg-dev, libasound2-dev; build-static.sh installs the cross compilers). Prints
# the path of each .deb on a line of its own, last.
#
# amd64: cargo-deb's release build, linked to Debian's libasound2 (Depends computed by
# dpkg-shlibdeps). arm64, armhf: the static binaries of contrib/build-static.sh, packaged as
# they are (cargo-deb --no-build), so one package runs on every Debian and Raspberry Pi OS.
# What goes in the package is in Cargo.toml's [package.metadata.deb]; the unit, the init script
# and the man pages are made here from contrib/ and the binary's own help.
set -euo pipefail
cd "$(dirname "$0")/.."
archs=("$@")
[ ${#archs[@]} -gt 0 ] || archs=(amd64 arm64 armhf)
log() { echo "build-deb: $*" >&2; }

# The epoch puts us above every version of the C++ rtpmidid package we replace.
upstream=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
version="1:$upstream-1"

missing=()
for p in dpkg-dev libasound2-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
fi
if ! cargo deb --version 2>/dev/null | grep -q '^cargo-deb 3\.'; then
  log "cargo install cargo-deb"
  cargo install cargo-deb --locked --version '^3.8' -q >&2
fi

# The release binary of this machine: packaged for amd64, and run to write the man pages.
log "cargo build --release"
cargo build --release --locked --quiet --bin rtpmidid >&2
assets=target/deb-assets
rm -rf "$assets" && mkdir -p "$assets/init.d" "$assets/systemd"
sed -e 's#/usr/local/bin/rtpmidid#/usr/bin/rtpmidid#' \
    -e 's#^Documentation=.*#Documentation=man:rtpmidid(8) file:///usr/share/doc/rtpmidid/README.md#' \
    contrib/rtpmidid.service >"$assets/systemd/rtpmidid.service"
sed -e 's#/usr/local/bin/rtpmidid#/usr/bin/rtpmidid#' contrib/init.d/rtpmidid \
  >"$assets/init.d/rtpmidid"
bash contrib/debian/gen-man.sh target/release/rtpmidid "$assets" >/dev/null

debs=()
mkdir -p target/debian
for arch in "${archs[@]}"; do
  # The file name without the epoch, as Debian names them.
  deb=target/debian/rtpmidid_${upstream}-1_$arch.deb
  rm -f "$deb"
  case $arch in
    amd64)
      log "cargo deb ($arch)"
      cargo deb --locked --deb-version "$version" -o "$deb" >"$deb.log" 2>&1 || true ;;
    arm64 | armhf)
      [ "$arch" = arm64 ] && static=aarch64 || static=armhf
      triple=$(bash contrib/build-static.sh "$static" | tail -n1 | sed 's#.*/target/\([^/]*\)/release/rtpmidid#\1#')
      host=$( [ "$arch" = arm64 ] && echo aarch64-linux-gnu || echo arm-linux-gnueabihf )
      log "cargo deb ($arch, static)"
      # cargo-deb strips a copy with the strip of the target's binutils.
      env "STRIP_$host=$host-strip" "OBJCOPY_$host=$host-objcopy" \
        cargo deb --no-build --target "$triple" --variant static --deb-version "$version" \
          -o "$deb" >"$deb.log" 2>&1 || true ;;
    *) echo "usage: $0 [amd64] [arm64] [armhf]" >&2; exit 2 ;;
  esac
  [ -f "$deb" ] || { tail -n 20 "$deb.log" >&2; log "cargo deb failed for $arch"; exit 1; }
  debs+=("$PWD/$deb")
done
printf '%s\n' "${debs[@]}"
