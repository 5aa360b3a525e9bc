#!/usr/bin/env bash
# Run every benchmark in turn and print their RESULT lines (each prints its own figures too).
# Long: about 20-40 minutes on 2 cores. Individual scripts are listed in the README.
set -uo pipefail
cd "$(dirname "$0")/.."
run() { echo; echo "=== $*"; "$@" || echo "(failed: $*)"; }
run bash bench/import.sh 3
run bash bench/snapshot.sh 10
run bash bench/unpack.sh 3 200
run bash bench/runtime-run.sh 50
run bash bench/runtime-exec.sh 30
run node --import tsx bench/monitor-rss.ts
run node --import tsx bench/mqtt-transfer.ts
run node --expose-gc --max-semi-space-size=1 --import tsx bench/agent-reconcile.ts 10000
run node --import tsx bench/agent-idle.ts 15
run bash bench/agent-rss.sh 10 30
run node --import tsx bench/agent-e2e.ts
run node --import tsx bench/console.ts 1000 5
run node --import tsx bench/fleet-api.ts
run node --import tsx bench/self-update.ts
run node --import tsx bench/devmapper-snapshot.ts
run node bench/package.mjs
