#!/usr/bin/env bash
# berth's main job on embedded defaults. Today: build a sample image from busybox, import it as an OCI
# layout and as a docker-archive into a fresh state dir, list, inspect, export, garbage-collect.
# (The end-to-end fleet → agent → running container flow replaces this as it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
STATE=${BERTH_DEMO_STATE:-$(mktemp -d /tmp/berth-demo.XXXXXX)}
WORK=$(mktemp -d /tmp/berth-demo-img.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
berth() { node dist/berth.mjs --state-dir "$STATE" "$@"; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "berth version"
berth version
say "building a sample image from busybox-static (umoci)"
bash scripts/sample-image.sh "$WORK/sample" v1
skopeo --insecure-policy copy -q "oci:$WORK/sample:v1" "docker-archive:$WORK/sample.tar:sample:v1-docker"
say "import the OCI layout and the docker-archive"
berth image import "$WORK/sample" --tag sample:v1
berth image import "$WORK/sample.tar"
say "images in $STATE"
berth image ls
say "inspect sample:v1 (command and layers)"
berth image inspect sample:v1 | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const i=JSON.parse(s);console.log({cmd:i.config.config.Cmd,layers:i.manifest.layers.map(l=>l.digest.slice(0,19)+" "+l.size+" B")})})'
say "export sample:v1 as an OCI layout and remove the docker-archive copy"
berth image export sample:v1 "$WORK/exported"
berth image rm sample:v1-docker
berth image ls --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).map(i=>i.name+" "+i.digest)))'
say "done; state dir kept at $STATE"
