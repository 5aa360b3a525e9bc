#!/usr/bin/env bash
# `exec` of /bin/true into a running container, median of N (default 30), berth-runtime vs runc, each on
# its own container from the same bundle (busybox-static, runc's default config, `sleep` as init), ratio
# printed, with the load average (other work inflates both alike). Needs root.
#   bench/runtime-exec.sh [N]
set -euo pipefail
N=${1:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BERTH=${BERTH_RUNTIME:-$ROOT/native/build/x64/berth-runtime}
[ -x "$BERTH" ] || make -C "$ROOT/native" >/dev/null
WORK=$(mktemp -d /tmp/berth-bench-exec-XXXXXX)
STATE=$(mktemp -d /run/berth-bench-exec-XXXXXX)
ID=bx-$$
cleanup() {
  "$BERTH" --root "$STATE/berth" delete --force "$ID" >/dev/null 2>&1 || true
  runc --root "$STATE/runc" delete --force "$ID" >/dev/null 2>&1 || true
  rm -rf "$STATE" "$WORK"
  for h in /sys/fs/cgroup/*/; do rmdir "$h"berth-bench-exec-$$-* 2>/dev/null || true; done
}
trap cleanup EXIT
B=$WORK/bundle
mkdir -p "$B/rootfs/bin" "$B/rootfs/proc" "$B/rootfs/sys" "$B/rootfs/dev" "$B/rootfs/tmp"
cp /bin/busybox "$B/rootfs/bin/"
for a in true sh sleep; do ln -s busybox "$B/rootfs/bin/$a"; done
runc spec --bundle "$B"

median_ms() { # runtime-binary root
  local i t0 t1
  local -a times=()
  for ((i = 0; i < N; i++)); do
    t0=$(date +%s%N)
    "$1" --root "$2" exec "$ID" /bin/true
    t1=$(date +%s%N)
    times+=($(((t1 - t0) / 1000)))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]/1000}'
}

declare -A MS
for rt in berth runc; do
  bin=$BERTH
  [ "$rt" = runc ] && bin=runc
  jq --arg cg "/berth-bench-exec-$$-$rt" '.process.terminal=false | .process.args=["sleep","600"] | .linux.cgroupsPath=$cg' \
    "$B/config.json" > "$WORK/config-$rt.json"
  mkdir -p "$WORK/b-$rt"
  cp "$WORK/config-$rt.json" "$WORK/b-$rt/config.json"
  jq --arg r "$B/rootfs" '.root.path=$r' "$WORK/b-$rt/config.json" > "$WORK/b-$rt/c" && mv "$WORK/b-$rt/c" "$WORK/b-$rt/config.json"
  "$bin" --root "$STATE/$rt" run --detach --bundle "$WORK/b-$rt" "$ID" </dev/null >/dev/null 2>&1
  MS[$rt]=$(median_ms "$bin" "$STATE/$rt")
done
echo "exec /bin/true, median of $N: berth-runtime ${MS[berth]} ms, runc ${MS[runc]} ms (berth/runc $(awk -v a="${MS[berth]}" -v b="${MS[runc]}" 'BEGIN {printf "%.2f", a/b}')), load $(cut -d' ' -f1-3 /proc/loadavg)"
