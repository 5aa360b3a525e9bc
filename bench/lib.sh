# Shared helpers for bench scripts: a loop-mounted filesystem (the root FS here is erratic for
# metadata-heavy writes, so every benchmark runs on its own loop mount) and a timer.
set -euo pipefail

# loopfs <fstype> <size> <mountpoint>: make, mount, and register cleanup
loopfs() {
  local fstype=$1 size=$2 mnt=$3 img
  img=$(mktemp /tmp/berth-bench-XXXXXX.img)
  truncate -s "$size" "$img"
  case $fstype in
    ext4) mkfs.ext4 -q -F "$img" ;;
    btrfs) mkfs.btrfs -q -f "$img" >/dev/null ;;
  esac
  mkdir -p "$mnt"
  mount -o loop "$img" "$mnt"
  BENCH_CLEANUP+=("umount -l '$mnt'; rm -f '$img'")
}

BENCH_CLEANUP=()
bench_cleanup() {
  local i
  for ((i = ${#BENCH_CLEANUP[@]} - 1; i >= 0; i--)); do eval "${BENCH_CLEANUP[$i]}" || true; done
}
trap bench_cleanup EXIT

# now_ms: wall clock in milliseconds
now_ms() { date +%s%3N; }

# median of numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
