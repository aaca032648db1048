#!/usr/bin/env bash
# Builds the amidi2net test peer (Network MIDI 2.0 server and client by ALSA's maintainer) with
# the test-only stdio I/O backend, for the end-to-end tests:
#
#   bash tests/peers/amidi2net/build.sh        # prints the directory of the binaries last
#
# Idempotent and cached in tests/peers/amidi2net/cache/ (gitignored): a second run with the same
# inputs does nothing. On a fresh Debian bookworm machine run it as root the first time: it
# installs the build packages it lacks (autoconf automake libtool pkg-config gcc make
# libssl-dev bzip2 patch).
#
# - alsa-lib: amidi2net needs >= 1.2.13, bookworm has 1.2.8. The source of trixie's alsa-lib is
#   fetched with apt-get source through a private apt state (cache/apt/, one deb-src-only entry
#   for trixie): the machine's own sources.list and package lists are never touched, so apt can
#   not start upgrading the system to trixie. The tarball is checked against the SHA-256 in the
#   signed Sources index, then built static into cache/alsa/ (--with-configdir=/usr/share/alsa).
#   ALSA_LIB_TARBALL=/path/alsa-lib-1.2.x.tar.bz2 uses a given tarball instead.
# - amidi2net: copied from $AMIDI2NET_SRC (default: ../shared/peers/amidi2net next to the
#   repository, read-only there), patched with amidi2net-stdio.patch plus io-stdio.c (the
#   --stdio backend: UMP packets as hex lines on stdin / stdout, no kernel UMP support needed),
#   configured --without-avahi (no mDNS at all) and linked against the static alsa-lib.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TOP="$(cd "$HERE/../../.." && pwd)"
CACHE="$HERE/cache"
ALSA_MIN=1.2.13
ALSA_SUITE=trixie

say() { echo "amidi2net/build.sh: $*" >&2; }
die() { say "$*"; exit 1; }

if [ -z "${AMIDI2NET_SRC:-}" ]; then
    for d in "$TOP/../shared/peers/amidi2net" /work/shared/peers/amidi2net; do
        [ -f "$d/common.c" ] && { AMIDI2NET_SRC=$d; break; }
    done
fi
[ -f "${AMIDI2NET_SRC:-}/common.c" ] || die "amidi2net sources not found; set AMIDI2NET_SRC"
AMIDI2NET_SRC="$(cd "$AMIDI2NET_SRC" && pwd)"

mkdir -p "$CACHE"
# One builder at a time (parallel test runs would race on the cache).
exec 9>"$CACHE/.lock"
flock 9

# ---- build packages -------------------------------------------------------------------------
packages=(gcc make autoconf automake libtool pkg-config libssl-dev bzip2 patch)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing packages ${missing[*]}; run once as root"
    say "installing ${missing[*]}"
    apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >/dev/null
fi

# ---- alsa-lib >= 1.2.13, static, private prefix ---------------------------------------------
ALSA_PREFIX=$CACHE/alsa
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]; }

alsa_version() {
    PKG_CONFIG_LIBDIR="$ALSA_PREFIX/lib/pkgconfig" PKG_CONFIG_PATH= pkg-config --modversion alsa \
        2>/dev/null || true
}

fetch_alsa_tarball() {
    # Private apt state: one deb-src entry for trixie, nothing else; the system's apt is untouched.
    local apt=$CACHE/apt
    mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial" "$CACHE/src"
    printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$ALSA_SUITE" >"$apt/parts/alsa-src.sources"
    local o=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
             -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
             -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o APT::Sandbox::User=root)
    say "fetching alsa-lib source from $ALSA_SUITE (private apt state in $apt)"
    apt-get "${o[@]}" update -qq >&2 || die "apt-get update (private state) failed"
    local info orig sum
    info=$(apt-cache "${o[@]}" showsrc alsa-lib)
    # " <sha256> <size> alsa-lib_X.orig.tar.<ext>" in the Checksums-Sha256 block
    read -r sum orig < <(awk '/^Checksums-Sha256:/ {c=1; next} /^[^ ]/ {c=0}
                              c && $3 ~ /\.orig\.tar\./ {print $1, $3; exit}' <<<"$info")
    [ -n "${orig:-}" ] || die "no alsa-lib orig tarball listed for $ALSA_SUITE"
    if [ ! -f "$CACHE/src/$orig" ]; then
        # The .dsc may be missing on some mirrors (apt-get then fails after fetching the rest);
        # only the orig tarball is needed, and its SHA-256 is checked below.
        (cd "$CACHE/src" && apt-get "${o[@]}" source -d -qq alsa-lib >"$apt/source.log" 2>&1) || true
    fi
    [ -f "$CACHE/src/$orig" ] || { cat "$apt/source.log" >&2; die "could not download $orig"; }
    echo "$sum  $CACHE/src/$orig" | sha256sum -c --quiet - >&2 \
        || { rm -f "$CACHE/src/$orig"; die "$orig: SHA-256 mismatch"; }
    echo "$CACHE/src/$orig"
}

if ! { [ -f "$ALSA_PREFIX/lib/libasound.a" ] && version_ge "$(alsa_version)" "$ALSA_MIN"; }; then
    tarball=${ALSA_LIB_TARBALL:-$(fetch_alsa_tarball)}
    say "building alsa-lib from $(basename "$tarball") (static, ~30 s on 2 cores)"
    rm -rf "$CACHE/alsa-src" "$CACHE/build-alsa" "$ALSA_PREFIX"
    mkdir -p "$CACHE/alsa-src" "$CACHE/build-alsa"
    tar -xf "$tarball" -C "$CACHE/alsa-src" --strip-components=1
    multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
    (cd "$CACHE/build-alsa" && "$CACHE/alsa-src/configure" --prefix="$ALSA_PREFIX" \
        --enable-static --disable-shared --with-configdir=/usr/share/alsa \
        --with-plugindir="/usr/lib/$multiarch/alsa-lib" --disable-python --disable-topology \
        --disable-ucm --disable-alisp >configure.log 2>&1 \
        && make -j"$(nproc)" >make.log 2>&1 && make install >install.log 2>&1) \
        || die "alsa-lib build failed; see $CACHE/build-alsa/*.log"
    version_ge "$(alsa_version)" "$ALSA_MIN" || die "alsa-lib $(alsa_version) < $ALSA_MIN"
fi
ALSA_VERSION=$(alsa_version)

# ---- amidi2net with the stdio backend -------------------------------------------------------
BIN=$CACHE/bin
stamp=$( { (cd "$AMIDI2NET_SRC" && find . -type f ! -name '.*' | LC_ALL=C sort | xargs sha256sum);
           sha256sum "$HERE/amidi2net-stdio.patch" "$HERE/io-stdio.c" "$HERE/build.sh" | cut -d' ' -f1;
           echo "alsa $ALSA_VERSION"; } | sha256sum | cut -d' ' -f1)
if [ -x "$BIN/amidi2net-server" ] && [ -x "$BIN/amidi2net-client" ] &&
   [ "$(cat "$BIN/.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$BIN"
    exit 0
fi

say "building amidi2net from $AMIDI2NET_SRC against alsa-lib $ALSA_VERSION"
B=$CACHE/build-amidi2net
rm -rf "$B" "$BIN"
mkdir -p "$B"
cp -r "$AMIDI2NET_SRC/." "$B/"
chmod -R u+w "$B"
(cd "$B" && patch -s -p1 <"$HERE/amidi2net-stdio.patch") || die "amidi2net-stdio.patch does not apply"
cp "$HERE/io-stdio.c" "$B/"
(cd "$B" && autoreconf -fi >autoreconf.log 2>&1 \
    && PKG_CONFIG="pkg-config --static" PKG_CONFIG_PATH="$ALSA_PREFIX/lib/pkgconfig" \
       ./configure --without-avahi >configure.log 2>&1 \
    && make -j"$(nproc)" >make.log 2>&1) \
    || { tail -n 30 "$B"/*.log >&2; die "amidi2net build failed; see $B/*.log"; }

# The rig must never publish over mDNS, and must do authentication.
grep -q '^#define SUPPORT_AUTH 1' "$B/config.h" || die "built without openssl (no authentication)"
! grep -q '^#define SUPPORT_MDNS' "$B/config.h" || die "built with mDNS support"
for p in amidi2net-server amidi2net-client; do
    ! ldd "$B/$p" | grep -q avahi || die "$p links avahi"
    { "$B/$p" --help || true; } | grep -q -- '--stdio' || die "$p has no --stdio option"
done

mkdir -p "$BIN"
cp "$B/amidi2net-server" "$B/amidi2net-client" "$BIN/"
echo "$stamp" >"$BIN/.stamp"
say "built $BIN/amidi2net-server and amidi2net-client"
echo "$BIN"
