#!/usr/bin/env bash
# The test command: installs dependencies, builds with warnings as errors, and runs every test
# (unit, integration, fault), ending with ctest's summary line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/setup.sh"
"$root/scripts/build.sh" -DPSERVER_WERROR=ON
"$root/scripts/check_tests_built.sh"
cd "${BUILD_DIR:-$root/build}"
ctest --output-on-failure -j 2 "$@"
