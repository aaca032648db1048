#!/bin/bash
# Builds (once) what tests/vm/run.sh boots: Debian's stock kernel, uncompressed for its PVH entry,
# and a base initramfs with busybox, dash, iproute2 and the alsa-utils tools. Everything lands in
# tests/vm/cache/ (gitignored); a second run only checks that it is there.
# Recipe and measurements: /work/shared/notes/alsa-vm.md.
#
# Usage: tests/vm/build-image.sh [--force]
# Prints the paths of the kernel and the initramfs it built or found.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=$HERE/cache
# Kernel modules loaded in the guest, in this order after their dependencies.
MODULES="snd-hrtimer snd-seq snd-seq-dummy snd-virmidi virtio_pci 9pnet_virtio 9p veth"
HOST_PACKAGES="qemu-system-x86 busybox-static alsa-utils cpio kmod iproute2 xz-utils dash
libasound2-dev pkg-config"
ALSA_TOOLS="aconnect aplaymidi arecordmidi aseqdump amidi aseqnet"

log() { echo "build-image: $*" >&2; }
die() { log "error: $*"; exit 1; }

force=0
[[ ${1:-} == --force ]] && force=1

apt_updated=0
apt_update() {
    if [[ $apt_updated == 0 ]]; then
        # An unreachable third-party source makes update complain; the Debian ones suffice.
        apt-get update -qq || log "apt-get update reported errors; going on"
        apt_updated=1
    fi
}

install_host_packages() {
    local missing=() p
    for p in $HOST_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]}; install them as root"
        log "installing ${missing[*]}"
        apt_update
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

# The kernel package the meta package points at now (old ones leave the mirror).
kernel_package() {
    local pkg
    pkg=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }') || true
    if [[ -z $pkg ]]; then
        apt_update
        pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    fi
    [[ -n $pkg ]] || die "apt-cache knows no linux-image-amd64"
    echo "$pkg"
}

fetch_kernel() { # $1 package, $2 version -> $CACHE/kernel-$2/
    local pkg=$1 version=$2 dir=$CACHE/kernel-$2
    [[ -f $dir/.done ]] && return
    rm -rf "$dir" "$CACHE/deb"
    mkdir -p "$dir/root" "$CACHE/deb"
    log "downloading $pkg"
    local get=(apt-get download -qq -o APT::Sandbox::User=root "$pkg")
    (cd "$CACHE/deb" && "${get[@]}") || { apt_update; (cd "$CACHE/deb" && "${get[@]}"); }
    dpkg-deb -x "$CACHE"/deb/"$pkg"_*.deb "$dir/root"
    rm -rf "$CACHE/deb"
    depmod -b "$dir/root" "$version"
    # vmlinuz is a bzImage around an xz stream; the uncompressed ELF boots through its PVH
    # entry and halves the boot time under TCG.
    local image=$dir/root/boot/vmlinuz-$version offset
    offset=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$image" | head -n1 | cut -d: -f1) || true
    [[ -n $offset ]] || die "no xz stream in $image"
    # (xz stops reading at the stream's end: no pipe, or tail's SIGPIPE fails the build.)
    xz -dc --single-stream <(tail -c +$((offset + 1)) "$image") >"$dir/vmlinux"
    [[ $(head -c4 "$dir/vmlinux" | od -An -tx1 | tr -d ' ') == 7f454c46 ]] || die "extracted vmlinux is not ELF"
    touch "$dir/.done"
}

# Copies a host file to the same path under $ROOT, keeping symlinked names as symlinks.
copy_file() { # $1 root, $2 absolute host path
    local root=$1 path=$2
    [[ -e $root$path ]] && return
    mkdir -p "$root$(dirname "$path")"
    cp -L "$path" "$root$path"
}

copy_with_libs() { # $1 root, $2... host executables
    local root=$1 f lib
    shift
    for f in "$@"; do
        copy_file "$root" "$f"
        for lib in $(ldd "$f" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'); do
            copy_file "$root" "$lib"
        done
    done
}

build_initramfs() { # $1 version -> $CACHE/base.cpio
    local version=$1 kroot=$CACHE/kernel-$1/root root=$CACHE/initramfs
    rm -rf "$root"
    mkdir -p "$root"/usr/{bin,sbin,lib,lib64} "$root"/{proc,sys,dev,run,tmp,root,work,etc,mnt,var}
    for d in bin sbin lib lib64; do ln -s "usr/$d" "$root/$d"; done

    # Real tools first; busybox fills in the rest.
    local tools=() t
    for t in dash ip $ALSA_TOOLS; do tools+=("$(command -v "$t")"); done
    copy_with_libs "$root" "${tools[@]}"
    # Rust binaries built on the host unwind through libgcc_s.
    copy_file "$root" /usr/lib/x86_64-linux-gnu/libgcc_s.so.1
    ln -s dash "$root/usr/bin/sh"
    cp /bin/busybox "$root/usr/bin/busybox"
    local applet
    for applet in $(busybox --list-full); do
        [[ $(basename "$applet") == busybox ]] && continue
        [[ -e $root/$applet || -L $root/$applet ]] && continue
        mkdir -p "$root/$(dirname "$applet")"
        ln -s /usr/bin/busybox "$root/$applet"
    done

    mkdir -p "$root/usr/share/alsa"
    cp -a /usr/share/alsa/alsa.conf /usr/share/alsa/cards /usr/share/alsa/pcm "$root/usr/share/alsa/"

    # Modules, uncompressed so busybox insmod/modprobe need no xz support, with their own
    # modules.dep, and the load order in /etc/vm-modules.
    local mdir=lib/modules/$version line path
    mkdir -p "$root/usr/$mdir"
    : >"$root/etc/vm-modules"
    while read -r line; do
        [[ $line == insmod* ]] || continue
        path=$(echo "$line" | awk '{ print $2 }')
        path=${path#"$kroot"/}
        path=${path#usr/}
        path=${path#lib/modules/"$version"/}
        local dest=$root/usr/$mdir/${path%.xz}
        mkdir -p "$(dirname "$dest")"
        if [[ $path == *.xz ]]; then xz -dc "$kroot/lib/modules/$version/$path" >"$dest"; else cp "$kroot/lib/modules/$version/$path" "$dest"; fi
        grep -qxF "/$mdir/${path%.xz}" "$root/etc/vm-modules" || echo "/$mdir/${path%.xz}" >>"$root/etc/vm-modules"
    done < <(modprobe -a -d "$kroot" -S "$version" --show-depends $MODULES)
    cp "$kroot/lib/modules/$version"/modules.{order,builtin,builtin.modinfo} "$root/usr/$mdir/" 2>/dev/null || true
    depmod -b "$root" "$version"

    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
    printf 'root:x:0:\naudio:x:29:\nnogroup:x:65534:\n' >"$root/etc/group"
    printf 'hosts: files\n' >"$root/etc/nsswitch.conf"
    for f in /etc/protocols /etc/services; do [[ -f $f ]] && cp "$f" "$root/etc/"; done
    install -m 755 "$HERE/init" "$root/init"

    (cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$CACHE/base.cpio.tmp"
    mv "$CACHE/base.cpio.tmp" "$CACHE/base.cpio"
    # run.sh leaves out of its per-run archive the libraries the base already has.
    (cd "$root" && find . -mindepth 1 ! -type d | sed 's|^\.||') >"$CACHE/base.files"
}

main() {
    mkdir -p "$CACHE"
    # Runs started together (parallel tests) build once; the others wait.
    exec 9>"$CACHE/.lock"
    flock 9
    install_host_packages
    local pkg version stamp
    # Asking apt costs 0.7 s a run: ask once a day, or with --force.
    if [[ $force == 0 && -n $(find "$CACHE/kernel.pkg" -mtime -1 2>/dev/null) ]]; then
        pkg=$(cat "$CACHE/kernel.pkg")
    else
        pkg=$(kernel_package)
        echo "$pkg" >"$CACHE/kernel.pkg"
    fi
    version=${pkg#linux-image-}
    fetch_kernel "$pkg" "$version"
    find "$CACHE" -maxdepth 1 -name 'kernel-*' ! -name "kernel-$version" -exec rm -rf {} +
    # Rebuild the initramfs when the kernel, this script or the guest init changed.
    stamp=$(cat "$0" "$HERE/init" | sha256sum | cut -c1-16)-$version
    if [[ $force == 1 || ! -f $CACHE/base.cpio || ! -f $CACHE/base.files || $(cat "$CACHE/base.stamp" 2>/dev/null) != "$stamp" ]]; then
        log "building initramfs for $version"
        build_initramfs "$version"
        echo "$stamp" >"$CACHE/base.stamp"
    fi
    ln -sfn "kernel-$version/vmlinux" "$CACHE/vmlinux"
    echo "$CACHE/vmlinux"
    echo "$CACHE/base.cpio"
}

main
