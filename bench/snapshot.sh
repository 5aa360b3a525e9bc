#!/usr/bin/env bash
# Snapshot creation time vs file count (1k, 20k files) per backend, each on its own loop filesystem.
#   bash bench/snapshot.sh [runs]        (see bench/snapshot-create.ts)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x native/build/x64/berth-storage ]] || make -s -C native
exec node --import tsx bench/snapshot-create.ts "${1:-15}"
