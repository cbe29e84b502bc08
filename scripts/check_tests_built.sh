#!/usr/bin/env bash
# Fails if a *_test.cc file is not registered with CMake (no orphan tests).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
status=0
while IFS= read -r f; do
  name=$(basename "$f")
  if ! grep -rqF --include=CMakeLists.txt --include='*.cmake' "$name" "$root"; then
    echo "check_tests_built: $f is not registered in any CMakeLists.txt or *.cmake file" >&2
    status=1
  fi
done < <(cd "$root" && find src apps tools tests bench testing -name '*_test.cc' 2>/dev/null)
exit $status
