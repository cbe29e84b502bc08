#!/usr/bin/env bash
# python_test: the Python package against a real cluster (docs/python.md).
#
#   python_test.sh PSERVER PYTHON PACKAGE_PARENT SOURCE_DIR
#
#   1. the stubs and docstrings cover the extension (check_stubs.py);
#   2. `pserver launch --servers 2 --workers 3 -- python3 check_worker.py`: exact sums for every
#      value type as vectors and rows, zero copy, errors, callbacks, push_pull, bounded delay;
#   3. a Python worker that raises, one that forgets finalize() and one whose callback raises each
#      make `pserver launch` exit non-zero; a `with` block finalizes by itself;
#   4. examples/python/logistic_sgd.py on a seeded synthetic set (`pserver gen-data`, 20,000 rows to
#      train, 4,000 held out) reaches a held-out AUC >= 0.73 (the L1-regularised optimum that
#      `pserver train linear` finds on it scores 0.743);
#   5. examples/python/embedding_adagrad.py (1,000 users, 500 items, 100,000 ratings) reaches a
#      held-out RMSE <= 0.3 (the noise is 0.1; predicting the mean scores 2.0).
set -euo pipefail
pserver=$1 python=$2 package_parent=$3 source=$4
export PYTHONPATH="$package_parent${PYTHONPATH:+:$PYTHONPATH}"
work=$(mktemp -d "${TMPDIR:-/tmp}/pserver_python_test.XXXXXX")
trap 'rm -rf "$work"' EXIT
fail() { echo "python_test: FAILED: $*" >&2; exit 1; }

"$python" "$source/python/tests/check_stubs.py" || fail "stubs or docstrings"

rc=0
"$pserver" launch --servers 2 --workers 3 --metrics-port 0 -- "$python" "$source/python/tests/check_worker.py" >"$work/check.log" 2>&1 || rc=$?
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
# It failed for the reason given, after joining the cluster (not, say, at import).
[ "$rc" != 0 ] && grep -q "RuntimeError: a worker that fails" "$work/raises.log" ||
  { cat "$work/raises.log"; fail "a Python worker that raised: pserver launch exited $rc"; }
echo "python_test: a Python worker that raises: pserver launch exited $rc"

# expect_job NAME WANT_RC PATTERN: runs $work/NAME.py on 1 server and 2 workers; the launcher must
# exit WANT_RC ("fail": any but 0) and the log hold PATTERN.
expect_job() {
  local name=$1 want=$2 pattern=$3 rc=0
  "$pserver" launch --servers 1 --workers 2 -- "$python" "$work/$name.py" >"$work/$name.log" 2>&1 || rc=$?
  if { [ "$want" = fail ] && [ "$rc" = 0 ]; } || { [ "$want" != fail ] && [ "$rc" != "$want" ]; } ||
      ! grep -q "$pattern" "$work/$name.log"; then
    cat "$work/$name.log"
    fail "$name: pserver launch exited $rc (want $want), or its log lacks '$pattern'"
  fi
  echo "python_test: $name: pserver launch exited $rc, and the log says '$pattern'"
}
cat >"$work/forgets_finalize.py" <<'PY'
import numpy as np, pserver
node = pserver.Node.start()
kv = pserver.KVWorker(node)
t = node.declare_table("t", dtype=np.float64)
kv.wait(kv.push(t, np.arange(3, dtype=np.uint64), np.ones(3)))
print("leaving without finalize", flush=True)
PY
expect_job forgets_finalize fail "exits without finalize(): ending the job with an error"
cat >"$work/callback_raises.py" <<'PY'
import numpy as np, pserver
node = pserver.Node.start()
kv = pserver.KVWorker(node)
t = node.declare_table("t", dtype=np.float64)
def check(error):
    raise ValueError("the check in the callback failed")
kv.wait(kv.push(t, np.arange(3, dtype=np.uint64), np.ones(3), callback=check))
node.finalize()
PY
expect_job callback_raises fail "a request callback raised ValueError: the check in the callback failed"
cat >"$work/with_block.py" <<'PY'
import numpy as np, pserver
with pserver.Node.start() as node:
    kv = pserver.KVWorker(node)
    t = node.declare_table("t", dtype=np.float64)
    kv.wait(kv.push(t, np.arange(3, dtype=np.uint64), np.ones(3)))
    node.barrier()
    ts, got = kv.pull(t, np.arange(3, dtype=np.uint64))
    kv.wait(ts)
    print("with_block sums", got.tolist(), flush=True)
PY
expect_job with_block 0 "with_block sums \[2.0, 2.0, 2.0\]"

"$pserver" gen-data --out "$work/all.svm" --rows 24000 --features 2000 --nnz-per-row 20 --seed 5 >/dev/null
head -n 20000 "$work/all.svm" >"$work/train.svm"
tail -n 4000 "$work/all.svm" >"$work/test.svm"
rc=0
"$pserver" launch --servers 2 --workers 2 -- "$python" "$source/examples/python/logistic_sgd.py" \
  --train "$work/train.svm" --test "$work/test.svm" --epochs 5 >"$work/sgd.log" 2>&1 || rc=$?
auc=$(sed -n 's/.*test rows .* AUC \([0-9.]*\) .*/\1/p' "$work/sgd.log")
if [ "$rc" != 0 ] || [ -z "$auc" ] || ! "$python" -c "import sys; sys.exit(0 if $auc >= 0.73 else 1)"; then
  cat "$work/sgd.log"
  fail "logistic_sgd.py: exit $rc, held-out AUC '${auc}' (want >= 0.73)"
fi
echo "python_test: logistic_sgd.py: held-out AUC $auc (>= 0.73)"

rc=0
"$pserver" launch --servers 2 --workers 2 -- "$python" "$source/examples/python/embedding_adagrad.py" \
  --users 1000 --items 500 --ratings 100000 --epochs 6 >"$work/emb.log" 2>&1 || rc=$?
rmse=$(sed -n 's/.*test ratings .* RMSE \([0-9.]*\) .*/\1/p' "$work/emb.log")
if [ "$rc" != 0 ] || [ -z "$rmse" ] || ! "$python" -c "import sys; sys.exit(0 if $rmse <= 0.3 else 1)"; then
  cat "$work/emb.log"
  fail "embedding_adagrad.py: exit $rc, held-out RMSE '${rmse}' (want <= 0.3)"
fi
echo "python_test: embedding_adagrad.py: held-out RMSE $rmse (<= 0.3)"
echo "python_test: passed"
