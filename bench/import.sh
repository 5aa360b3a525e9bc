#!/usr/bin/env bash
# Image import throughput: `berth image import` of a >= 200 MiB OCI image vs `skopeo copy` of the same
# image to an OCI directory, on the same loop-mounted ext4, median of N runs. Prints the ratio
# berth/skopeo (aim: <= 1.0, i.e. berth no slower).
#   bash bench/import.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RUNS=${1:-5}
[[ -f dist/berth.mjs ]] || node scripts/build.mjs
W=/tmp/berth-bench-import.$$
loopfs ext4 3G "$W"

echo "building a >= 200 MiB image (host /usr files packed by umoci)..."
umoci init --layout "$W/src" >/dev/null
umoci new --image "$W/src:big" >/dev/null
umoci unpack --image "$W/src:big" "$W/bundle" >/dev/null
# a real file mix (libraries, binaries, data from the host's /usr), first ~260 MiB of it
(set +o pipefail; cd / && find usr/lib/x86_64-linux-gnu usr/bin usr/share -xdev -type f -printf '%s %p\n' 2>/dev/null |
  awk '{ t += $1; if (t > 260 * 1048576) exit; sub(/^[0-9]+ /, ""); print }' |
  cpio -pdm --quiet "$W/bundle/rootfs")
sz=$(du -sm "$W/bundle/rootfs" | cut -f1)
umoci repack --image "$W/src:big" "$W/bundle" >/dev/null
rm -rf "$W/bundle"
img_bytes=$(du -sb "$W/src/blobs" | cut -f1)
rootfs_mib=$sz
echo "image: $((img_bytes / 1048576)) MiB compressed (rootfs ${rootfs_mib} MiB)"

skopeo_ms=()
berth_ms=()
for i in $(seq "$RUNS"); do
  rm -rf "$W/skopeo-out" "$W/state"
  sync
  t0=$(now_ms)
  skopeo --insecure-policy copy -q "oci:$W/src:big" "oci:$W/skopeo-out:big"
  t1=$(now_ms)
  skopeo_ms+=($((t1 - t0)))
  sync
  t0=$(now_ms)
  node dist/berth.mjs --state-dir "$W/state" image import "$W/src" --tag big:1 >/dev/null
  t1=$(now_ms)
  berth_ms+=($((t1 - t0)))
  echo "run $i: skopeo ${skopeo_ms[-1]} ms, berth ${berth_ms[-1]} ms"
done
s=$(printf '%s\n' "${skopeo_ms[@]}" | median)
b=$(printf '%s\n' "${berth_ms[@]}" | median)
mib=$((img_bytes / 1048576))
echo "RESULT import ${mib} MiB: skopeo copy median ${s} ms, berth import median ${b} ms, ratio berth/skopeo = $(awk -v b="$b" -v s="$s" 'BEGIN{printf "%.2f", b/s}') (aim <= 1.0)"
