#!/usr/bin/env bash
# Unpack throughput of a ~200 MiB layer vs `tar -x` on the same loop filesystem, as ratios (wall, CPU).
#   bash bench/unpack.sh [runs] [MiB]    (see bench/unpack-throughput.ts; BERTH_UNPACKERS=native,node)
set -euo pipefail
cd "$(dirname "$0")/.."
[[ -x native/build/x64/berth-storage ]] || make -s -C native
exec node --import tsx bench/unpack-throughput.ts "${1:-3}" "${2:-200}"
