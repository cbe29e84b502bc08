#!/usr/bin/env bash
# python_test: the Python package against a real cluster (docs/python.md).
#
#   python_test.sh PSERVER PYTHON PACKAGE_PARENT SOURCE_DIR
#
#   1. the stubs and docstrings cover the extension (check_stubs.py);
#   2. `pserver launch --servers 2 --workers 3 -- python3 check_worker.py`: exact sums for every
#      value type as vectors and rows, zero copy, errors, callbacks, push_pull, bounded delay;
#   3. a Python worker that raises makes `pserver launch` exit non-zero.
set -euo pipefail
pserver=$1 python=$2 package_parent=$3 source=$4
export PYTHONPATH="$package_parent${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d "${TMPDIR:-/tmp}/pserver_python_test.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "python_test: FAILED: $*" >&2; exit 1; }

"$python" "$source/python/tests/check_stubs.py" || fail "stubs or docstrings"

rc=0
"$pserver" launch --servers 2 --workers 3 -- "$python" "$source/python/tests/check_worker.py" >"$work/check.log" 2>&1 || rc=$?
passed=$(grep -c "check_worker: worker [0-9]: every check passed" "$work/check.log" || true)
if [ "$rc" != 0 ] || [ "$passed" != 3 ]; then
  cat "$work/check.log"
  fail "check_worker: pserver launch exited $rc, $passed of 3 workers passed every check"
fi
grep "check_worker: worker 0: " "$work/check.log" | sed 's/^\[worker 0\] /python_test: /'

cat >"$work/raises.py" <<'PY'
import pserver
node = pserver.Node.start()
raise RuntimeError("a worker that fails")
PY
rc=0
"$pserver" launch --servers 1 --workers 2 -- "$python" "$work/raises.py" >"$work/raises.log" 2>&1 || rc=$?
[ "$rc" != 0 ] || { cat "$work/raises.log"; fail "a Python worker that raised: pserver launch exited 0"; }
echo "python_test: a Python worker that raises: pserver launch exited $rc"
echo "python_test: passed"
