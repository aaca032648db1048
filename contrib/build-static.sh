#!/usr/bin/env bash
# Builds a statically linked release binary of rtpmidid with libasound linked in.
#
#   bash contrib/build-static.sh [x86_64|aarch64|armhf] [--example NAME]
#
# (default x86_64; run as root the first time: it installs packages). --example builds one of
# examples/ instead of the daemon (the tests use seq_probe to check that libasound links).
#
# Prints the path of the binary on its last line. alsa-lib comes from Debian's own source
# package (Debian ships no libasound.a), configured with --enable-static and built once per
# architecture into .static-cache/ (gitignored); later runs only rebuild the Rust code.
# The binary still reads /usr/share/alsa/alsa.conf at run time, like a dynamic one.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
arch=${1:-x86_64}
what=(--bin rtpmidid) out=rtpmidid
if [ "${2:-}" = --example ] && [ -n "${3:-}" ]; then
  what=(--example "$3") out=examples/$3
fi
case $arch in
  x86_64)
    triple=x86_64-unknown-linux-gnu host=x86_64-linux-gnu cc=gcc
    packages=(gcc libc6-dev) ;;
  aarch64)
    triple=aarch64-unknown-linux-gnu host=aarch64-linux-gnu cc=aarch64-linux-gnu-gcc
    packages=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
  armhf)
    triple=armv7-unknown-linux-gnueabihf host=arm-linux-gnueabihf cc=arm-linux-gnueabihf-gcc
    packages=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
  *) echo "usage: $0 [x86_64|aarch64|armhf]" >&2; exit 2 ;;
esac
packages+=(make pkg-config dpkg-dev file)

log() { echo "build-static: $*" >&2; }

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    >/dev/null
fi
if ! rustup target list --installed | grep -qx "$triple"; then
  log "rustup target add $triple"
  rustup target add "$triple" >&2
fi

cache=$top/.static-cache
prefix=$cache/$host
if [ ! -f "$prefix/lib/libasound.a" ]; then
  mkdir -p "$cache/src"
  src=$(find "$cache/src" -maxdepth 1 -type d -name 'alsa-lib-*' | head -n1)
  if [ -z "$src" ]; then
    # apt-get source needs deb-src entries; add them for this machine's suite if there are none.
    if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
      suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
      log "adding deb-src entries for $suite"
      printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$suite" >/etc/apt/sources.list.d/rtpmidid-deb-src.sources
      apt-get update -qq >&2 || true
    fi
    (cd "$cache/src" && apt-get source -qq alsa-lib >&2)
    src=$(find "$cache/src" -maxdepth 1 -type d -name 'alsa-lib-*' | head -n1)
  fi
  log "building alsa-lib for $host from $src"
  build=$cache/build-$host
  rm -rf "$build" && mkdir -p "$build"
  (cd "$build" && CC=$cc "$src/configure" --host="$host" --prefix="$prefix" \
      --enable-static --disable-shared --with-configdir=/usr/share/alsa \
      --with-plugindir=/usr/lib/$host/alsa-lib --disable-python --disable-topology \
      >configure.log 2>&1 && make -j"$(nproc)" >make.log 2>&1 && make install >install.log 2>&1) \
    || { log "alsa-lib build failed; see $build/*.log"; exit 1; }
fi

log "cargo build --release --target $triple"
triple_env=$(echo "$triple" | tr 'a-z-' 'A-Z_')
env "CARGO_TARGET_${triple_env}_LINKER=$cc" \
    PKG_CONFIG_ALLOW_CROSS=1 PKG_CONFIG_ALL_STATIC=1 \
    PKG_CONFIG_LIBDIR="$prefix/lib/pkgconfig" PKG_CONFIG_PATH= \
    RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --quiet --target "$triple" "${what[@]}" >&2
echo "$top/target/$triple/release/$out"
