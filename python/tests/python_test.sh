#!/usr/bin/env bash
# python_test: the Python package against a real cluster (docs/python.md).
#
#   python_test.sh PSERVER PYTHON PACKAGE_PARENT SOURCE_DIR
#
#   1. the stubs and docstrings cover the extension (check_stubs.py);
#   2. `pserver launch --servers 2 --workers 3 -- python3 check_worker.py`: exact sums for every
#      value type as vectors and rows, zero copy, errors, callbacks, push_pull, bounded delay;
#   3. a Python worker that raises makes `pserver launch` exit non-zero;
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
