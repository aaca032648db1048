#!/bin/bash
# Runs a command inside a throw-away QEMU VM with Debian's stock kernel and a real ALSA sequencer
# (snd-seq, snd-seq-dummy = client 14 "Midi Through", snd-virmidi = clients 16-19), streams its
# output and exits with its exit status. A guest that does not finish in time is a failure.
#
# Usage: tests/vm/run.sh [OPTIONS] -- COMMAND [ARG...]
#   --share DIR      mount host DIR read-write at /work in the guest (virtio-9p); the command
#                    runs in /work. Use it for bulk output: the console carries ~350 KB/s.
#   --copy SRC[:DST] put file or folder SRC at /work/DST (default: its base name) through the
#                    per-run initramfs; not with --share. Repeatable.
#   --libs-for FILE  add the shared libraries host ELF FILE needs (copied ELF files get theirs
#                    without asking). Repeatable.
#   --timeout S      give up after S seconds (default 60); exit status 124.
#   --mem MIB        guest memory (default 1024: the copied debug binaries live in RAM).
#   --smp N          virtual CPUs (default 1).
#   -v               print the boot+run time and, on failure, the kernel console's tail.
# The command runs under /bin/sh (dash) with busybox, iproute2 and alsa-utils on PATH.
# Exit status: the command's; 124 on timeout; 125 when the guest died without one.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
die() { echo "vm: $*" >&2; exit 125; }
usage() { sed -n '/^# Usage/,/^# Exit/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

share= timeout_s=60 mem=1024 smp=1 verbose=0
copies=() libs_for=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --share) share=$(cd "$2" && pwd); shift 2 ;;
    --copy) copies+=("$2"); shift 2 ;;
    --libs-for) libs_for+=("$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --smp) smp=$2; shift 2 ;;
    -v) verbose=1; shift ;;
    --) shift; break ;;
    *) usage ;;
    esac
done
[[ $# -gt 0 ]] || usage
[[ -z $share || ${#copies[@]} == 0 ]] || die "--copy and --share exclude each other"

images=$("$HERE/build-image.sh")
kernel=$(sed -n 1p <<<"$images")
base=$(sed -n 2p <<<"$images")

tmp=$(mktemp -d "${TMPDIR:-/tmp}/alsa-vm.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root/vm" "$root/work"

# The usr-merged base has /lib -> usr/lib etc.; compare names in their /usr form.
usr_form() { case $1 in /lib/* | /lib64/* | /bin/* | /sbin/*) echo "/usr$1" ;; *) echo "$1" ;; esac; }
add_libs() { # $1 host ELF file
    local lib dest
    for lib in $(ldd "$1" 2>/dev/null | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'); do
        dest=$(usr_form "$lib")
        grep -qxF "$dest" "$HERE/cache/base.files" && continue
        [[ -e $root$dest ]] && continue
        mkdir -p "$root$(dirname "$dest")"
        cp -L "$lib" "$root$dest"
    done
}
is_elf() { [[ $(head -c4 "$1" | od -An -tx1 | tr -d ' ') == 7f454c46 ]]; }

for c in ${copies[@]+"${copies[@]}"}; do
    src=${c%%:*}
    dst=${c#*:}
    [[ $c == *:* ]] || dst=$(basename "$src")
    [[ -e $src ]] || die "no such file: $src"
    mkdir -p "$(dirname "$root/work/$dst")"
    cp -a "$src" "$root/work/$dst"
    while IFS= read -r -d '' f; do
        is_elf "$f" && add_libs "$f"
    done < <(find "$root/work/$dst" -type f -print0)
done
for f in ${libs_for[@]+"${libs_for[@]}"}; do
    is_elf "$f" || die "not an ELF file: $f"
    add_libs "$f"
done

# The command, quoted for dash.
{
    printf '#!/bin/sh\n'
    for arg in "$@"; do printf "'%s' " "${arg//\'/\'\\\'\'}"; done
    printf '\n'
} >"$root/vm/cmd"

qemu_share=()
if [[ -n $share ]]; then
    touch "$root/vm/share"
    qemu_share=(-fsdev "local,id=w,path=$share,security_model=none" -device virtio-9p-pci,fsdev=w,mount_tag=work)
fi

# A concatenation of newc archives is a valid initramfs.
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) >"$tmp/run.cpio"
cat "$base" "$tmp/run.cpio" >"$tmp/initrd"

# /dev/kvm here may be a paravirtual hypervisor the stock kernel cannot boot on: use KVM only
# with the real modules loaded.
accel=(-accel tcg)
if [[ -w /dev/kvm && ( -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ) ]]; then
    accel=(-accel kvm -cpu host)
fi

start=$(date +%s.%N)
set +e
timeout -k 5 "$timeout_s" qemu-system-x86_64 -M pc "${accel[@]}" -smp "$smp" -m "${mem}M" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$kernel" -initrd "$tmp/initrd" \
    -append "console=ttyS0 rdinit=/init panic=-1 loglevel=4 mitigations=off cryptomgr.notests tsc=reliable no_timer_check nokaslr audit=0 apparmor=0" \
    -chardev "file,id=con,path=$tmp/console.log" -serial chardev:con \
    -chardev stdio,id=out,signal=off -serial chardev:out \
    -chardev "file,id=st,path=$tmp/status" -serial chardev:st \
    ${qemu_share[@]+"${qemu_share[@]}"} </dev/null
qemu_rc=$?
set -e
end=$(date +%s.%N)

status=$(tr -dc '0-9' <"$tmp/status" 2>/dev/null || true)
if [[ $verbose == 1 ]]; then
    printf 'vm: %.2f s (%s)\n' "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "${accel[*]}" >&2
fi
if [[ $qemu_rc == 124 || $qemu_rc == 137 ]]; then
    echo "vm: timeout: the guest did not finish within $timeout_s s" >&2
    [[ $verbose == 1 ]] && tail -n 20 "$tmp/console.log" >&2
    exit 124
fi
if [[ -z $status ]]; then
    echo "vm: the guest stopped without an exit status (qemu exit $qemu_rc); kernel console:" >&2
    tail -n 30 "$tmp/console.log" >&2
    exit 125
fi
exit "$status"
