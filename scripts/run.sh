#!/usr/bin/env bash
# The main job: installs dependencies, builds, and runs a local cluster -- 1 scheduler,
# 2 servers, 2 workers, each its own process -- where every worker pushes known values to
# random sparse keys and pulls them back, checking the exact sums, with progress per round.
# Extra arguments go to the workers (see `pserver worker --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh"
exec "${BUILD_DIR:-$root/build}/tools/pserver/pserver" launch --servers 2 --workers 2 -- \
  "${BUILD_DIR:-$root/build}/tools/pserver/pserver" worker --keys 200000 --rounds 20 "$@"
