#!/usr/bin/env bash
# Installs what building and testing rtpmidid needs on a fresh Debian machine, when missing.
# Idempotent and quiet when everything is there.
set -euo pipefail

apt_packages=(
  pkg-config libasound2-dev            # the alsa crate
  tshark                               # Wireshark's dissectors as a second opinion on our bytes
  qemu-system-x86 busybox-static alsa-utils cpio kmod iproute2 xz-utils  # the ALSA test VM
  python3-venv                         # test peers from PyPI
  tmux                                 # a real terminal for `ctl top` (tests/ctl_top.rs)
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq || true   # an unreachable extra source only warns
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked -q
