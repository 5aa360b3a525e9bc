#!/usr/bin/env bash
# Agent RSS idle with N real running containers (issue 6: aim <= 60 MiB; balena's supervisor starts at
# ~85 MB). All real: `berth fleet serve` with its embedded broker, the sample image pushed to it, `berth
# agent` as its own process (the built bundle, as shipped minus pkg) on a loop-mounted ext4 state dir,
# a target of N services (berth-runtime + berth-monitor each), then idle for S seconds.
#
#   bash bench/agent-rss.sh [containers=10] [idle-seconds=30]
#   BERTH_EXE=dist/berth-linux-x64 (default when it exists; `npm run package -- --arch x64 --no-deb`)
#
# Prints the agent's VmRSS / Pss (smaps_rollup) / VmHWM after converging and after the idle period, for
# the packaged executable as shipped (BERTH_EXE; with NODE_OPTIONS=--max-semi-space-size=1 too: a SEA
# refuses --lite-mode there) and for the bundle under plain `node` and `node --max-semi-space-size=1`,
# next to a bare `node` and the packaged executable's own base Node (BERTH_BASE_NODE, default: the one
# scripts/packaging seeded) idling in the same script (the runtimes' floors), and the per-container
# berth-monitor RSS. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10} IDLE=${2:-30}
[[ $(id -u) == 0 ]] || { echo "agent-rss: run as root" >&2; exit 1; }
[[ -f dist/berth.mjs ]] || node scripts/build.mjs
make -s -C native >/dev/null

WORK=$(mktemp -d /tmp/berth-bench-rss.XXXXXX)
BENCH_CLEANUP+=("rm -rf '$WORK'")
loopfs ext4 768M "$WORK/mnt"
FLEET=$WORK/mnt/fleet
mkdir -p "$FLEET"
berth() { node dist/berth.mjs --log-level warn "$@"; }
PIDS=()
BENCH_CLEANUP+=('for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done')

wait_for() { # wait_for <seconds> <what> <command...>
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "agent-rss: timed out waiting for $what" >&2
  return 1
}
kib() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/$3"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
rss_line() { # rss_line <label> <pid>
  printf '%-30s VmRSS %6s MiB (anon %5s, file %5s)  Pss %6s MiB  VmHWM %6s MiB\n' "$1" \
    "$(mib "$(kib "$2" VmRSS status)")" "$(mib "$(kib "$2" RssAnon status)")" "$(mib "$(kib "$2" RssFile status)")" \
    "$(mib "$(kib "$2" Pss smaps_rollup)")" "$(mib "$(kib "$2" VmHWM status)")"
}

PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
berth --state-dir "$FLEET" fleet keygen >"$WORK/fleet.pub"
node dist/berth.mjs --log-level warn --state-dir "$FLEET" fleet serve --listen "127.0.0.1:$PORT" --http off >/dev/null 2>&1 &
PIDS+=($!)
wait_for 20 "the fleet broker" node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$PORT"
bash scripts/sample-image.sh "$WORK/sample" v1 "rss bench" >/dev/null
skopeo --insecure-policy copy -q "oci:$WORK/sample:v1" "oci:$WORK/sample-v1:v1"
berth --state-dir "$FLEET" fleet push "$WORK/sample-v1" --tag sample:v1 >/dev/null 2>&1

# the target: N services of one app, each a sleeping shell (no health check traffic)
{
  echo '{"images":["sample:v1"],"apps":{"idle":{"services":{'
  for ((i = 0; i < N; i++)); do
    ((i > 0)) && echo ','
    printf '"s%d":{"image":"sample:v1","networkMode":"none","stopTimeoutMs":500,"command":["/bin/sleep","100000"]}' "$i"
  done
  echo '}}}}'
} >"$WORK/target.json"

running() { # running <state-dir> → count of running containers
  node dist/berth.mjs --state-dir "$1" ps --json 2>/dev/null | jq '[.[] | select(.state == "running")] | length'
}

measure() { # measure <label> <launcher...>: `node [flags] dist/berth.mjs`, or the packaged executable
  local label=$1 dev device apid t0 n
  shift
  dev=$WORK/mnt/dev-$RANDOM device=rss-$RANDOM
  mkdir -p "$dev"
  "$@" --log-level warn --state-dir "$dev" agent --broker "mqtt://127.0.0.1:$PORT" \
    --device-id "$device" --fleet-key "$WORK/fleet.pub" --mqtt-version 4 2>"$WORK/agent-$device.log" &
  apid=$!
  PIDS+=($apid)
  wait_for 20 "the agent's local API" test -S "$dev/berth.sock"
  t0=$(now_ms)
  berth --state-dir "$FLEET" fleet deploy "$WORK/target.json" --device "$device" --broker "mqtt://127.0.0.1:$PORT" \
    --mqtt-version 4 >/dev/null
  wait_for 180 "$N containers running" bash -c "[[ \$(node dist/berth.mjs --state-dir '$dev' ps --json | jq '[.[] | select(.state == \"running\")] | length') == $N ]]" ||
    { tail -20 "$WORK/agent-$device.log" >&2; exit 1; }
  echo
  echo "== agent under: $* ($N containers running $(($(now_ms) - t0)) ms after the deploy)"
  rss_line "converged" "$apid"
  sleep "$IDLE"
  n=$(running "$dev")
  rss_line "after ${IDLE}s idle ($n running)" "$apid"
  AGENT_RSS[$label]=$(kib "$apid" VmRSS status)
  local mons total=0 count=0
  mons=$(pgrep -f "berth-monitor.*$dev" || true)
  for m in $mons; do total=$((total + $(kib "$m" VmRSS status))); count=$((count + 1)); done
  ((count > 0)) && printf '%-34s %d monitors, %s MiB each on average (separate processes)\n' "berth-monitor" "$count" "$(mib $((total / count)))"
  kill -TERM "$apid"; wait "$apid" 2>/dev/null || true
  for c in $(node dist/berth.mjs --state-dir "$dev" ps -a --json | jq -r '.[].name'); do
    node dist/berth.mjs --state-dir "$dev" rm -f "$c" >/dev/null 2>&1 || true
  done
  { grep -F " $dev" /proc/mounts || true; } | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
}

declare -A AGENT_RSS
node -e 'setInterval(() => {}, 1000)' &
BARE=$!
PIDS+=($BARE)
EXE=${BERTH_EXE:-dist/berth-linux-$(node -p 'process.arch')}
BASE_NODE=${BERTH_BASE_NODE:-$(ls -d "${BERTH_PACKAGE_CACHE:-$HOME/.cache/berth-package}"/pkg-home/.pkg-cache/sea/node-v*-linux-"$(node -p 'process.arch')"/bin/node 2>/dev/null | tail -1)}
KINDS=()
if [[ -x $EXE ]]; then
  measure packaged "$EXE"
  measure packaged-semi1 env NODE_OPTIONS=--max-semi-space-size=1 "$EXE"
  KINDS+=(packaged packaged-semi1)
else
  echo "agent-rss: no packaged executable at $EXE (npm run package -- --arch x64 --no-deb): bundle only" >&2
fi
measure plain node dist/berth.mjs
measure semi1 node --max-semi-space-size=1 dist/berth.mjs
measure semi1-lite node --max-semi-space-size=1 --lite-mode dist/berth.mjs
KINDS+=(plain semi1 semi1-lite)
echo
rss_line "bare node (idle, same machine)" "$BARE"
if [[ -x $BASE_NODE ]]; then
  "$BASE_NODE" -e 'setInterval(() => {}, 1000)' &
  PIDS+=($!)
  sleep 1
  rss_line "packaged base node (idle)" "$!"
fi
bare=$(kib "$BARE" VmRSS status)
for k in "${KINDS[@]}"; do
  awk -v l="$k" -v a="${AGENT_RSS[$k]}" -v b="$bare" 'BEGIN {
    printf "RESULT agent-idle-rss-%s containers='"$N"' rss=%.1fMiB vs-bare-node=%.2fx vs-aim-60MiB=%.2f\n", l, a/1024, a/b, a/1024/60 }'
done
