#!/usr/bin/env bash
# Agent RSS idle with N real running containers (issue 6: aim <= 60 MiB; balena's supervisor starts at
# ~85 MB). All real: `berth fleet serve` with its embedded broker, the sample image pushed to it, `berth
# agent` as its own process (the built bundle, as shipped minus pkg) on a loop-mounted ext4 state dir,
# a target of N services (berth-runtime + berth-monitor each), then idle for S seconds.
#
#   bash bench/agent-rss.sh [containers=10] [idle-seconds=60]
#   BERTH_EXE=dist/berth-linux-x64 (default when it exists; `npm run package -- --arch x64 --no-deb`)
#   BENCH_KINDS="packaged packaged-noenv" (default: every kind below)
#
# Each agent enrolls first (a short run with a one-use token: the embedded broker takes enrolled devices
# only) and is measured on its next start, as a device runs after its first boot.
# Prints the agent's VmRSS / Pss (smaps_rollup) / VmHWM after converging and after the idle period (and
# the smaps_rollup split: clean file pages, of them the executable's own, vs dirty/anonymous), for
# the packaged executable as shipped (BERTH_EXE, with the environment packaging/berth.service gives it;
# and without that environment), for the bundle under plain `node` and under `node --lite-mode` (which a
# SEA refuses in NODE_OPTIONS),
# next to a bare `node` and the packaged executable's own base Node (BERTH_BASE_NODE, default: the one
# scripts/packaging seeded) idling in the same script (the runtimes' floors), and the per-container
# berth-monitor RSS. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
# the idle period outlasts the agent's page-out (agent.pageOutAfterMs, 30 s after it converged): the
# "converged" line is before it, the "after idle" line after it, once the agent touched what it uses again
N=${1:-10} IDLE=${2:-60}
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
  # where the file-backed part is: the executable's own pages (clean page cache of the file, dropped under
  # memory pressure and read back when touched; Private_ only because no other process maps the file)
  printf '%-30s   Shared_Clean %5s  Private_Clean %5s  Private_Dirty %5s  Anonymous %5s  of it the executable %5s MiB\n' "" \
    "$(mib "$(kib "$2" Shared_Clean smaps_rollup)")" "$(mib "$(kib "$2" Private_Clean smaps_rollup)")" \
    "$(mib "$(kib "$2" Private_Dirty smaps_rollup)")" "$(mib "$(kib "$2" Anonymous smaps_rollup)")" \
    "$(mib "$(awk -v exe="$(readlink "/proc/$2/exe")" '/^[0-9a-f]+-[0-9a-f]+ / {cur = ($6 == exe)} $1 == "Rss:" && cur {s += $2} END {print s + 0}' "/proc/$2/smaps")")"
}

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(free_port) HTTP_PORT=$(free_port)
berth --state-dir "$FLEET" fleet keygen >"$WORK/fleet.pub"
node dist/berth.mjs --log-level warn --state-dir "$FLEET" fleet serve --listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP_PORT" >/dev/null 2>&1 &
PIDS+=($!)
for p in "$PORT" "$HTTP_PORT"; do
  wait_for 20 "the fleet server" node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$p"
done
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

evict_page_cache() { # evict_page_cache <file>: drop its clean pages from the page cache
  python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$1"
}

measure() { # measure <label> <launcher...>: `node [flags] dist/berth.mjs`, or the packaged executable
  local label=$1 dev device apid t0 n token
  shift
  dev=$WORK/mnt/dev-$RANDOM device=rss-$RANDOM
  mkdir -p "$dev"
  # the embedded broker takes enrolled devices only: each device enrolls once with a one-use token (an
  # agent run that is stopped once enrollment.json is written); the measured run is a later boot of it
  token=$(berth --state-dir "$FLEET" fleet enroll create --uses 1 2>/dev/null)
  node dist/berth.mjs --log-level warn --state-dir "$dev" agent --broker "mqtt://127.0.0.1:$PORT" --offline \
    --enroll "http://127.0.0.1:$HTTP_PORT" --token "$token" --device-id "$device" 2>"$WORK/enroll-$device.log" &
  apid=$!
  PIDS+=($apid)
  wait_for 30 "the enrollment" test -s "$dev/enrollment.json" || { cat "$WORK/enroll-$device.log" >&2; exit 1; }
  kill -TERM "$apid"; wait "$apid" 2>/dev/null || true
  # the executable's pages leave the page cache first: pages still cached (a fresh build, an earlier run)
  # are mapped around each fault too and would count in RSS; every kind starts from the same state
  evict_page_cache "${@: -1}"
  "$@" --log-level warn --state-dir "$dev" agent --broker "mqtt://127.0.0.1:$PORT" \
    --device-id "$device" --fleet-key "$WORK/fleet.pub" --mqtt-version 4 2>"$WORK/agent-$device.log" &
  apid=$!
  PIDS+=($apid)
  wait_for 20 "the agent's local API" test -S "$dev/berth.sock"
  t0=$(now_ms)
  # --allow-unknown: the agent may not have said hello yet; the retained target waits for it
  berth --state-dir "$FLEET" fleet deploy "$WORK/target.json" --device "$device" --allow-unknown \
    --broker "mqtt://127.0.0.1:$PORT" --mqtt-version 4 >/dev/null
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
WANT=${BENCH_KINDS:-packaged packaged-noenv plain lite}
# the environment berth.service gives the agent (what the .deb ships), minus the state dir
mapfile -t UNIT_ENV < <(sed -n 's/^Environment=//p' packaging/berth.service | tr -d '"' | tr ' ' '\n' | grep -v '^BERTH_STATE_DIR=' | grep .)
want() { [[ " $WANT " == *" $1 "* ]]; }
if [[ -x $EXE ]]; then
  # as berth.service runs it, and the bare executable
  want packaged && { measure packaged env "${UNIT_ENV[@]}" "$EXE"; KINDS+=(packaged); }
  want packaged-noenv && { measure packaged-noenv "$EXE"; KINDS+=(packaged-noenv); }
else
  echo "agent-rss: no packaged executable at $EXE (npm run package -- --arch x64 --no-deb): bundle only" >&2
fi
want plain && { measure plain node dist/berth.mjs; KINDS+=(plain); }
want lite && { measure lite node --lite-mode dist/berth.mjs; KINDS+=(lite); }
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
