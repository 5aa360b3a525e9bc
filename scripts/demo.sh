#!/usr/bin/env bash
# berth's main job, end to end on embedded defaults (run as root):
#   fleet server with its embedded MQTT broker → sample image v1/v2 pushed to the fleet → a device agent
#   with its own state dir (btrfs on a loop file when possible, else overlay) → deploy v1 (compose) →
#   watch it run → update to v2 → logs and reported state → stop everything and clean up.
# The device enrolls with a one-time token from the fleet's management API (no anonymous broker clients).
# Exits 0 only when v2 is really running on the device.
#   npm run demo -- --keep    leaves the fleet server (API + web console) and the agent running, prints the
#                             console URL, a login made for it, and the command that stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "demo: run as root (containers, mounts)" >&2; exit 1; }
KEEP=""
for a in "$@"; do
  case $a in
    --keep) KEEP=1 ;;
    *) echo "demo: unknown argument $a (expected: --keep)" >&2; exit 2 ;;
  esac
done
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
  if [[ -n $KEEP && -n ${DEMO_OK:-} ]]; then return 0; fi
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

say "fleet server with its embedded MQTT broker and the management API"
free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT=$(free_port) HTTP_PORT=$(free_port)
fleetc fleet keygen >"$WORK/fleet.pub"
# node itself in the background (not through the function): its pid is the one cleanup stops
node dist/berth.mjs --log-level warn --state-dir "$FLEET" fleet serve --listen "127.0.0.1:$PORT" --http "127.0.0.1:$HTTP_PORT" \
  >"$WORK/serve.log" 2>&1 &
PIDS+=($!)
port_open() { node -e 'require("net").connect(+process.argv[1],"127.0.0.1").on("connect",()=>process.exit(0)).on("error",()=>process.exit(1))' "$1"; }
wait_for 20 "the fleet broker on :$PORT" port_open "$PORT"
wait_for 20 "the management API on :$HTTP_PORT" port_open "$HTTP_PORT"
echo "broker mqtt://127.0.0.1:$PORT, API and console http://127.0.0.1:$HTTP_PORT/"
# an admin for the console and the remote CLI (on the server's own state dir, as a first admin is made)
PASSWORD=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
echo "$PASSWORD" | fleetc fleet user add admin --role admin --password-stdin >/dev/null
echo "user admin (role admin) made"

say "sample image v1 and v2 (busybox-static, umoci), pushed to the fleet"
bash scripts/sample-image.sh "$WORK/sample" v1 "hello from berth v1"
bash scripts/sample-image.sh "$WORK/sample" v2 "hello from berth v2"
for v in v1 v2; do
  skopeo --insecure-policy copy -q "oci:$WORK/sample:$v" "oci:$WORK/sample-$v:$v"
  fleetc fleet push "$WORK/sample-$v" --tag "sample:$v" 2>/dev/null
done

say "device agent $DEVICE enrolls with a one-time token (state dir $DEV)"
fleetc fleet enroll create --group demo --expires 10m --uses 1 >"$WORK/enroll.token"
echo "enrollment token made (group demo, one use, 10 minutes)"
node --max-semi-space-size=1 dist/berth.mjs --log-level info --state-dir "$DEV" agent \
  --enroll "http://127.0.0.1:$HTTP_PORT" --token-file "$WORK/enroll.token" --device-id "$DEVICE" >"$WORK/agent.out" 2>"$WORK/agent.log" &
PIDS+=($!)
wait_for 30 "the agent's local API" test -S "$DEV/berth.sock" || { tail -20 "$WORK/agent.log" >&2; exit 1; }
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
  fleetc fleet deploy "$WORK/compose-$v.yml" --device "$DEVICE"
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
if [[ -n $KEEP ]]; then
  # everything stays up; stop.sh does what the EXIT trap would have done
  {
    echo '#!/usr/bin/env bash'
    printf 'cd %q\n' "$PWD"
    printf 'PIDS=(%s) DEV=%q WORK=%q LOOPFILE=%q KEEP=""\n' "${PIDS[*]}" "$DEV" "$WORK" "$LOOPFILE"
    declare -f cleanup
    echo cleanup
  } >"$WORK/stop.sh"
  chmod 700 "$WORK/stop.sh"
  DEMO_OK=1
  say "v2 is running; everything is left running (--keep)"
  cat <<EOF
console        http://127.0.0.1:$HTTP_PORT/
login          admin / $PASSWORD
remote CLI     ./bin/berth fleet login --server http://127.0.0.1:$HTTP_PORT --user admin
device         $DEVICE (state dir $DEV): ./bin/berth --state-dir $DEV ps
fleet          ./bin/berth --state-dir $FLEET fleet devices
stop it all    bash $WORK/stop.sh
EOF
  exit 0
fi
say "v2 is running; stopping the agent and cleaning up"
