#!/usr/bin/env bash
# Make a fresh Debian 12 checkout ready: apt packages (as root), node modules, native parts, bundle.
# Idempotent and quick when everything is already there; `npm test` and `npm run demo` run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential make gcc libc6-dev jq
  mosquitto mosquitto-clients
  btrfs-progs e2fsprogs xfsprogs busybox-static cpio zstd attr
  umoci skopeo runc mmdebstrap containerd docker-registry
  iproute2 iptables nftables
  qemu-user-static qemu-system-x86 qemu-system-data dmsetup thin-provisioning-tools xz-utils
  binutils python3 time openssl strace
  chromium fonts-dejavu-core
  gcc-aarch64-linux-gnu g++-aarch64-linux-gnu gcc-arm-linux-gnueabihf g++-arm-linux-gnueabihf
  gcc-powerpc64le-linux-gnu g++-powerpc64le-linux-gnu
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing Debian packages (install as root): ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -q
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}"
fi

if [[ ! -d node_modules/better-sqlite3 || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

if [[ -f native/Makefile ]]; then
  make -s -C native -j2
  make -s -C native -j2 SANITIZE=1   # ASan+UBSan builds the tests drive
fi
node scripts/build.mjs
