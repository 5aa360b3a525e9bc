#!/usr/bin/env bash
# Pull + unpack of a real image, berth vs containerd, on the same loop filesystem (issue 16 item 4).
#
#   bash bench/vs-containerd.sh [runs=3] [btrfs|ext4|both=both]
#
# The image: Debian bookworm minbase, made by mmdebstrap from this machine's apt sources and packed by
# umoci (test/fixtures/debian-image.sh); set DEBIAN_ROOTFS_TAR=<mmdebstrap tarball> to reuse one.
#   containerd: a private docker-registry (Debian's docker-registry) and a private containerd (Debian's
#     containerd 1.6), both on 127.0.0.1 with their own config, root, state and socket under the work
#     dir — never the system services; `ctr images pull --plain-http` (fetch + unpack) with the btrfs or
#     overlayfs snapshotter.
#   berth: `berth fleet serve` (embedded broker, --allow-anonymous: a bench enrolls no device) with the
#     image pushed to it and a target naming it deployed to the bench device; `berth pull --unpack` over
#     MQTT into a fresh state dir (btrfs, or overlay on ext4): one process fetches and unpacks, as `ctr
#     images pull` does. Printed split: unpack = the time the command reports for it (snapshots,
#     extraction, commit) plus the final sync -f, pull = the rest (process start, MQTT transfer, blob
#     commit, image record); the transport is whatever this checkout has.
# Each run is cold on both sides (a fresh containerd root / berth state dir; page cache not dropped:
# the machine is shared), the two sides alternate, medians of N runs and the ratio berth/containerd
# (aim ≤ 1.0) are printed with the load average. CPU (user+sys), steadier than wall time on a shared
# machine: containerd's daemon (its /proc stat before and after) plus ctr, against the berth process with
# its children (the extractor); neither side counts its server (registry, fleet server).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RUNS=${1:-3}
WHICH=${2:-both}
for tool in mmdebstrap umoci skopeo containerd ctr docker-registry; do
  command -v "$tool" >/dev/null || { echo "vs-containerd: $tool is missing (scripts/bootstrap.sh installs it)" >&2; exit 1; }
done
node scripts/build.mjs >/dev/null # this checkout's code, not a stale bundle
berth() { node dist/berth.mjs --log-level warn "$@"; }

W=$(mktemp -d /tmp/berth-bench-vsctr.XXXXXX)
BENCH_CLEANUP+=("rm -rf '$W'")
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
wait_port() { # wait_port <port> <what>
  local i
  for ((i = 0; i < 100; i++)); do
    node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$1" && return 0
    sleep 0.2
  done
  echo "vs-containerd: $2 did not come up on :$1" >&2
  return 1
}
stop_pid() { kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }

echo "image: Debian bookworm minbase (mmdebstrap from the host's apt sources, umoci)..."
bash test/fixtures/debian-image.sh "$W/layout" ${DEBIAN_ROOTFS_TAR:+--rootfs-tar "$DEBIAN_ROOTFS_TAR"}
img_bytes=$(du -sb "$W/layout/blobs" | cut -f1)
echo "image: $((img_bytes / 1048576)) MiB of blobs"

# the private registry
RPORT=$(free_port)
mkdir -p "$W/registry"
cat >"$W/registry.yml" <<EOF
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage: { filesystem: { rootdirectory: $W/registry } }
http: { addr: 127.0.0.1:$RPORT }
EOF
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
REGISTRY_PID=$!
BENCH_CLEANUP+=("stop_pid $REGISTRY_PID")
wait_port "$RPORT" "docker-registry"
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/layout:bookworm" "docker://127.0.0.1:$RPORT/debian:bookworm"
REF=127.0.0.1:$RPORT/debian:bookworm

# the fleet server
FPORT=$(free_port)
berth --state-dir "$W/fleet" fleet keygen >"$W/fleet.pub"
node dist/berth.mjs --log-level warn --state-dir "$W/fleet" fleet serve --listen "127.0.0.1:$FPORT" --allow-anonymous >"$W/fleet.log" 2>&1 &
FLEET_PID=$!
BENCH_CLEANUP+=("stop_pid $FLEET_PID")
wait_port "$FPORT" "the fleet server"
berth --state-dir "$W/fleet" fleet push "$W/layout" --tag debian:bookworm >/dev/null
# the fleet serves a device only what its targets name: one target naming the image, for the bench device
# (each run pulls into a fresh state dir under that id)
echo '{"apps":{},"images":["debian:bookworm"]}' >"$W/target.json"
berth --state-dir "$W/fleet" fleet deploy "$W/target.json" --device bench-device --allow-unknown \
  --broker "mqtt://127.0.0.1:$FPORT" --mqtt-version 4 >/dev/null

# CPU (user+sys, ms) of a live process and its reaped children, from /proc/<pid>/stat (clock ticks)
proc_cpu_ms() {
  awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print int(($12 + $13 + $14 + $15) * 1000 / hz)}' "/proc/$1/stat"
}
# CPU (user+sys, ms) that /usr/bin/time -f '%U %S' wrote to a file
time_cpu_ms() { awk '{print int(($1 + $2) * 1000)}' "$1"; }

ctr_run() { # ctr_run <dir> <snapshotter> → "ms cpu_ms" on stdout (cpu: containerd's daemon + ctr)
  local d=$1 sn=$2 pid t0 t1 i c0 c1
  mkdir -p "$d"
  cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
EOF
  containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do ctr --address "$d/containerd.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
  sync -f "$d"
  c0=$(proc_cpu_ms "$pid")
  t0=$(now_ms)
  /usr/bin/time -f '%U %S' -o "$d/ctr.time" \
    ctr --address "$d/containerd.sock" images pull --plain-http --snapshotter "$sn" "$REF" >/dev/null
  sync -f "$d"
  t1=$(now_ms)
  c1=$(proc_cpu_ms "$pid")
  stop_pid "$pid"
  echo "$((t1 - t0)) $((c1 - c0 + $(time_cpu_ms "$d/ctr.time")))"
}

berth_run() { # berth_run <state-dir> <driver> → "pull_ms unpack_ms cpu_ms" on stdout (cpu: berth and its children)
  local s=$1 drv=$2 t0 t1 t2 u
  mkdir -p "$s"
  sync -f "$s"
  t0=$(now_ms)
  # one process pulls and unpacks, as `ctr images pull` does; the embedded broker speaks MQTT 3.1.1
  if ! BERTH_STORAGE_DRIVER=$drv /usr/bin/time -f '%U %S' -o "$s.time" node dist/berth.mjs --log-level warn \
    --state-dir "$s" pull debian:bookworm --unpack --broker "mqtt://127.0.0.1:$FPORT" --device-id bench-device --fleet-key "$W/fleet.pub" --mqtt-version 4 >"$s.pull.out" 2>"$s.pull.log" ||
    ! grep -q '^debian:bookworm sha256:' "$s.pull.out"; then
    echo "vs-containerd: berth pull failed:" >&2
    cat "$s.pull.out" "$s.pull.log" >&2
    return 1
  fi
  t1=$(now_ms)
  sync -f "$s"
  t2=$(now_ms)
  # the unpack's own time, as it printed it ("debian:bookworm: sha256:… (btrfs, 1234 ms)") plus the final
  # sync (its writeback); the rest is the pull
  u=$(sed -n 's/^debian:bookworm: sha256:[0-9a-f]* ([a-z]*, \([0-9]*\) ms)$/\1/p' "$s.pull.out")
  [[ -n $u ]] || { echo "vs-containerd: berth pull --unpack did not unpack:" >&2; cat "$s.pull.out" >&2; return 1; }
  echo "$((t1 - t0 - u)) $((u + t2 - t1)) $(time_cpu_ms "$s.time")"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a/b}'; }
fss=(btrfs ext4)
[[ $WHICH != both ]] && fss=("$WHICH")
for fs in "${fss[@]}"; do
  M=$W/mnt-$fs
  loopfs "$fs" 8G "$M"
  sn=overlayfs drv=overlay
  [[ $fs == btrfs ]] && sn=btrfs drv=btrfs
  ctr_ms=() pull_ms=() unpack_ms=() total_ms=() ctr_cpu=() berth_cpu=()
  for i in $(seq "$RUNS"); do
    read -r c cc <<<"$(ctr_run "$M/ctr-$i" "$sn")"
    read -r p u bc <<<"$(berth_run "$M/berth-$i" "$drv")"
    ctr_ms+=("$c") pull_ms+=("$p") unpack_ms+=("$u") total_ms+=($((p + u))) ctr_cpu+=("$cc") berth_cpu+=("$bc")
    echo "$fs run $i: containerd ${c} ms (cpu ${cc}) | berth ${p} + ${u} = $((p + u)) ms (pull + unpack; cpu ${bc})  load $(cut -d' ' -f1 /proc/loadavg)"
  done
  c=$(printf '%s\n' "${ctr_ms[@]}" | median)
  p=$(printf '%s\n' "${pull_ms[@]}" | median)
  u=$(printf '%s\n' "${unpack_ms[@]}" | median)
  b=$(printf '%s\n' "${total_ms[@]}" | median)
  cc=$(printf '%s\n' "${ctr_cpu[@]}" | median)
  bc=$(printf '%s\n' "${berth_cpu[@]}" | median)
  echo "RESULT $fs ($sn / $drv), median of $RUNS: ctr images pull ${c} ms; berth ${b} ms (pull ${p}, unpack ${u}); ratio berth/containerd $(ratio "$b" "$c") (aim <= 1.0); CPU containerd ${cc} ms, berth ${bc} ms ($(ratio "$bc" "$cc")); load $(cut -d' ' -f1-3 /proc/loadavg)"
done
