#!/usr/bin/env bash
# `run` of /bin/true, median of N (default 50), berth-runtime vs runc on the same bundle, ratio printed.
# The bundle (busybox-static rootfs, runc's default config without a terminal) lives on a loop-mounted
# ext4 file (this machine's root FS is erratic for metadata-heavy work); state roots are on /run (tmpfs),
# where both runtimes keep them by default. Also printed for scale: bare unshare + chroot of the same
# /bin/true, and the load average (other work on the machine inflates all three alike). Needs root.
#   bench/runtime-run.sh [N]
set -euo pipefail
N=${1:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BERTH=${BERTH_RUNTIME:-$ROOT/native/build/x64/berth-runtime}
[ -x "$BERTH" ] || make -C "$ROOT/native" >/dev/null
WORK=$(mktemp -d /tmp/berth-bench-XXXXXX)
MNT=$WORK/mnt
STATE=$(mktemp -d /run/berth-bench-XXXXXX)
CG=/berth-bench-$$
cleanup() {
  rm -rf "$STATE" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/; do rmdir "$h${CG#/}" 2>/dev/null || true; done
  umount "$MNT" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
truncate -s 128M "$WORK/fs.img"
mkfs.ext4 -q -F "$WORK/fs.img"
mkdir -p "$MNT"
mount -o loop "$WORK/fs.img" "$MNT"
B=$MNT/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/sys" "$B/rootfs/dev" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/"
ln -s busybox "$B/rootfs/bin/true"
ln -s busybox "$B/rootfs/bin/sh"
runc spec --bundle "$B"
jq --arg cg "$CG" '.process.terminal=false | .process.args=["/bin/true"] | .linux.cgroupsPath=$cg' "$B/config.json" > "$B/config.tmp"
mv "$B/config.tmp" "$B/config.json"

median_ms() { # label command... ; "@ID@" in the command is replaced by a unique container id
  local label=$1 i t0 t1
  shift
  local -a times=()
  for ((i = 0; i < N + 3; i++)); do
    local -a cmd=("${@//@ID@/bench-$label-$i}")
    t0=$EPOCHREALTIME
    "${cmd[@]}" >/dev/null
    t1=$EPOCHREALTIME
    ((i < 3)) || times+=($((${t1/./} - ${t0/./}))) # microseconds; the first 3 runs are warm-up
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.2f", m / 1000}'
}

berth_ms=$(median_ms berth "$BERTH" --root "$STATE/berth" run --bundle "$B" @ID@)
runc_ms=$(median_ms runc runc --root "$STATE/runc" run --bundle "$B" @ID@)
bare_ms=$(median_ms bare unshare -m -p -f -u -i -n chroot "$B/rootfs" /bin/true)
echo "run /bin/true, median of $N (same bundle; load average: $(cut -d' ' -f1-3 /proc/loadavg)):"
echo "  berth-runtime:          $berth_ms ms"
echo "  runc:                   $runc_ms ms"
echo "  unshare + chroot (bare): $bare_ms ms"
awk -v b="$berth_ms" -v r="$runc_ms" 'BEGIN { printf "  ratio berth/runc: %.2f (runc is %.1fx slower)\n", b / r, r / b }'
