#!/usr/bin/env bash
# berth's main job, end to end on embedded defaults (run as root):
#   fleet server with its embedded MQTT broker → sample image v1/v2 pushed to the fleet → a device agent
#   with its own state dir (btrfs on a loop file when possible, else overlay) → deploy v1 (compose) →
#   watch it run → update to v2 → logs and reported state → stop everything and clean up.
# Exits 0 only when v2 is really running on the device.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: run as root (containers, mounts)" >&2; exit 1; }
[[ -f dist/berth.mjs ]] || node scripts/build.mjs
make -s -C native >/dev/null
WORK=$(mktemp -d /tmp/berth-demo.XXXXXX)
FLEET=$WORK/fleet DEV=$WORK/device DEVICE=demo-$$
mkdir -p "$FLEET" "$DEV"
PIDS=() LOOPFILE=""
exec </dev/null
berth() { node dist/berth.mjs --log-level warn "$@"; }
fleetc() { berth --state-dir "$FLEET" "$@"; }
dev() { berth --state-dir "$DEV" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  [[ -f $WORK/agent.log && -n ${BERTH_DEMO_VERBOSE:-} ]] && tail -30 "$WORK/agent.log" >&2
  # the agent leaves containers running on purpose (monitors own them): remove them for the demo
  for c in $(node dist/berth.mjs --state-dir "$DEV" ps -a --json 2>/dev/null | jq -r '.[].name'); do
    node dist/berth.mjs --state-dir "$DEV" rm -f "$c" >/dev/null 2>&1
  done
  grep -F " $DEV" /proc/mounts | awk '{print $2}' | sort -r | while read -r m; do umount -l "$m"; done
  [[ -n $LOOPFILE ]] && rm -f "$LOOPFILE"
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_for() { # wait_for <seconds> <what> <command...>
  local secs=$1 what=$2 i
  shift 2
  for ((i = 0; i < secs * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "demo: timed out waiting for $what" >&2
  return 1
}
running_image() { dev ps --json | jq -e --arg i "$1" 'any(.[]; .image == $i and .state == "running")'; }
running_name() { dev ps --json | jq -r --arg i "$1" '[.[] | select(.image == $i and .state == "running")][0].name'; }
now() { date +%s%N; }

say "berth version"
berth version

say "device storage"
LOOPFILE=$WORK/device.btrfs
if truncate -s 512M "$LOOPFILE" && mkfs.btrfs -q "$LOOPFILE" >/dev/null 2>&1 && mount -o loop "$LOOPFILE" "$DEV"; then
  echo "btrfs on a loop file ($LOOPFILE)"
else
  rm -f "$LOOPFILE"; LOOPFILE=""
  echo "overlay on $DEV"
fi

say "fleet server with its embedded MQTT broker"
PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
fleetc fleet keygen >"$WORK/fleet.pub"
# node itself in the background (not through the function): its pid is the one cleanup stops
# (interim, until the HTTP API lands here: anonymous clients allowed; then the agent enrolls)
node dist/berth.mjs --log-level warn --state-dir "$FLEET" fleet serve --listen "127.0.0.1:$PORT" --http 127.0.0.1:0 --allow-anonymous &
PIDS+=($!)
wait_for 20 "the fleet broker on :$PORT" node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$PORT"
echo "broker mqtt://127.0.0.1:$PORT"

say "sample image v1 and v2 (busybox-static, umoci), pushed to the fleet"
bash scripts/sample-image.sh "$WORK/sample" v1 "hello from berth v1"
bash scripts/sample-image.sh "$WORK/sample" v2 "hello from berth v2"
for v in v1 v2; do
  skopeo --insecure-policy copy -q "oci:$WORK/sample:$v" "oci:$WORK/sample-$v:$v"
  fleetc fleet push "$WORK/sample-$v" --tag "sample:$v" 2>/dev/null
done

say "device agent $DEVICE (state dir $DEV)"
node --max-semi-space-size=1 dist/berth.mjs --log-level info --state-dir "$DEV" agent \
  --broker "mqtt://127.0.0.1:$PORT" --device-id "$DEVICE" --fleet-key "$WORK/fleet.pub" --mqtt-version 4 2>"$WORK/agent.log" &
PIDS+=($!)
wait_for 20 "the agent's local API" test -S "$DEV/berth.sock"
device_online() { fleetc fleet devices --json | jq -e --arg d "$DEVICE" 'any(.items[]; .id == $d and .online)'; }
wait_for 20 "the fleet to see $DEVICE online" device_online

for v in v1 v2; do
  say "deploy $v (docker-compose)"
  cat >"$WORK/compose-$v.yml" <<YML
name: hello
services:
  web:
    image: sample:$v
    network_mode: none
    stop_grace_period: 1s   # the sample's /bin/sh is PID 1 and ignores SIGTERM: SIGKILL after 1 s
YML
  cat "$WORK/compose-$v.yml"
  fleetc fleet deploy "$WORK/compose-$v.yml" --device "$DEVICE" --mqtt-version 4
  t0=$(now)
  wait_for 60 "sample:$v running" running_image "sample:$v" || { tail -20 "$WORK/agent.log" >&2; exit 1; }
  echo "sample:$v running $(( ($(now) - t0) / 1000000 )) ms after the deploy"
  say "berth ps"
  dev ps
  sleep 2.5
  say "berth logs"
  dev logs --tail 3 "$(running_name "sample:$v")"
done

say "devices, as the fleet sees them"
fleetc fleet devices
say "reported state of $DEVICE"
fleetc fleet state "$DEVICE" | jq -c '.' | head -c 3000; echo

running_image sample:v2
say "v2 is running; stopping the agent and cleaning up"
