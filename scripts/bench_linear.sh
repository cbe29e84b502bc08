#!/usr/bin/env bash
# Benchmarks of the linear models (issue 5; docs/benchmarks.md, "Linear models (issue 5)"):
#   correctness  DBPG against liblinear (-s 6, C = 1) at l1 = 1 on SpamAssassin and a synthetic set
#   tau          objective against time for tau = 0 1 2 4 8, worker idle fraction, KKT filter savings
#   speed        time to reach liblinear's objective within 0.1% on a large synthetic set
#   plot         draws docs/linear_tau.png and docs/linear_idle.png from the tau reports
# Usage: scripts/bench_linear.sh [all|correctness|tau|speed|plot]...   (default: all)
# Environment: PYTHON (with matplotlib; default /usr/bin/python3), PSERVER (the binary; default
# build/tools/pserver/pserver), SPEED_ROWS (10000000), SPEED_FEATURES (1000000), SPEED_NNZ (10),
# SPEED_MAX_PASSES (25), TAU_ROWS (1000000), TAU_FEATURES (200000).
# Writes data and JSON reports under data/bench/ (git-ignored). Installs liblinear-tools and
# python3-matplotlib with apt-get when missing. Every run uses 1 server and 2 workers.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
PS=${PSERVER:-build/tools/pserver/pserver}
B=data/bench
mkdir -p "$B"
[ -x "$PS" ] || { echo "bench_linear: $PS is missing (cmake --build build --target pserver_cli)" >&2; exit 1; }

need=()
command -v liblinear-train >/dev/null || need+=(liblinear-tools)
# Debian's python3-matplotlib lives in /usr/bin/python3 (a pyenv or venv python3 first in PATH
# does not see it), so the helper runs with PYTHON, by default /usr/bin/python3.
PYTHON=${PYTHON:-/usr/bin/python3}
[ -x "$PYTHON" ] || PYTHON=python3
"$PYTHON" -c "import matplotlib" 2>/dev/null || need+=(python3-matplotlib)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
PY="$PYTHON scripts/plot_linear.py"

now() { date +%s.%N; }
log() { echo "== $*"; }
# liblinear at C = 1/l1 (here l1 = 1), timed including reading the text file; then its objective
# in our scale, nnz and test metrics, computed from its model file (not from its printout).
liblinear() {  # name train test
  local name=$1 train=$2 test=$3 t0 t1
  log "liblinear-train -s 6 -c 1 -e 0.0001 $train $B/${name}_ll.model"
  t0=$(now); liblinear-train -s 6 -c 1 -e 0.0001 "$train" "$B/${name}_ll.model" | tail -3; t1=$(now)
  echo "{\"wall_seconds\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')}" > "$B/${name}_ll_time.json"
  cat "$B/${name}_ll_time.json"
  $PY eval-liblinear --model "$B/${name}_ll.model" --l1 1 --train "$train" ${test:+--test "$test"} \
      --out "$B/${name}_ll.json"
}
train() {  # report-name extra-args... (data via DATA)
  local name=$1; shift
  log "$PS train linear --data $DATA --l1 1 $* --servers 1 --workers 2 --report $B/$name.json"
  local t0 t1
  t0=$(now)
  # shellcheck disable=SC2086
  "$PS" train linear --data $DATA --l1 1 "$@" --servers 1 --workers 2 \
      --model-out "$B/$name.model" --report "$B/$name.json" 2>&1 | grep -v '\] pass ' | tail -4
  t1=$(now)
  echo "{\"wall_seconds\": $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')}" > "$B/${name}_time.json"
  cat "$B/${name}_time.json"
}

correctness() {
  ./scripts/fetch_spam.sh
  [ -s $B/syn200k.svm.1 ] || "$PS" gen-data --out $B/syn200k.svm --rows 400000 --features 50000 \
      --nnz-per-row 20 --seed 7 --files 2
  DATA=data/spam/train.svm train spam_ps --tol 1e-8 --max-passes 2000 --cache-dir $B/cache
  "$PS" predict --model $B/spam_ps.model --data data/spam/test.svm | tee $B/spam_ps_predict.txt
  liblinear spam data/spam/train.svm data/spam/test.svm
  DATA=$B/syn200k.svm.0 train syn200k_ps --tol 1e-8 --max-passes 2000 --cache-dir $B/cache
  "$PS" predict --model $B/syn200k_ps.model --data $B/syn200k.svm.1 | tee $B/syn200k_ps_predict.txt
  liblinear syn200k $B/syn200k.svm.0 $B/syn200k.svm.1
}

tau() {
  local rows=${TAU_ROWS:-1000000} feats=${TAU_FEATURES:-200000}
  [ -s $B/syn1m.svm ] || "$PS" gen-data --out $B/syn1m.svm --rows "$rows" --features "$feats" \
      --nnz-per-row 20 --seed 11
  DATA=$B/syn1m.svm
  # Parse once into the cache so that every timed run starts from the same binary cache.
  train syn1m_warm --max-passes 1 --cache-dir $B/cache
  for t in 0 1 2 4 8; do
    train syn1m_tau$t --tau $t --tol 1e-6 --max-passes 300 --cache-dir $B/cache
  done
  train syn1m_tau0_nokkt --tau 0 --no-kkt --tol 1e-6 --max-passes 300 --cache-dir $B/cache
  liblinear syn1m $B/syn1m.svm ""
  $PY table $B/syn1m_tau{0,1,2,4,8}.json $B/syn1m_tau0_nokkt.json
}

speed() {
  local rows=${SPEED_ROWS:-10000000} feats=${SPEED_FEATURES:-1000000} nnz=${SPEED_NNZ:-10}
  local f=$B/syn_speed.svm
  free -g
  [ -s $f ] || "$PS" gen-data --out $f --rows "$rows" --features "$feats" --nnz-per-row "$nnz" --seed 13
  ls -l $f
  DATA=$f
  # First run: no cache, so it parses the text (what a first-time user sees).
  rm -rf $B/cache_speed
  train syn_speed_cold --tol 1e-6 --max-passes "${SPEED_MAX_PASSES:-25}" --cache-dir $B/cache_speed
  # Second run: reads the binary cache the first one wrote.
  train syn_speed_warm --tol 1e-6 --max-passes "${SPEED_MAX_PASSES:-25}" --cache-dir $B/cache_speed
  liblinear syn_speed $f ""
  local target
  target=$("$PYTHON" -c "import json; print(json.load(open('$B/syn_speed_ll.json'))['objective'])")
  $PY reach --report $B/syn_speed_cold.json --target "$target" | tee $B/syn_speed_reach_cold.json
  $PY reach --report $B/syn_speed_warm.json --target "$target" | tee $B/syn_speed_reach_warm.json
}

plot() {
  local best=""
  [ -s $B/syn1m_ll.json ] && best=$("$PYTHON" -c "import json; print(json.load(open('$B/syn1m_ll.json'))['objective'])")
  $PY plot --tau-reports $B/syn1m_tau{0,1,2,4,8}.json --kkt-report $B/syn1m_tau0.json \
      --nokkt-report $B/syn1m_tau0_nokkt.json ${best:+--best "$best"} --out-dir docs \
      --title "DBPG on 1M x 200k synthetic, l1 = 1, 1 server + 2 workers"
}

steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(all)
for s in "${steps[@]}"; do
  case $s in
    all) uptime; ls -l --time-style=full-iso "$PS"; correctness; tau; plot; speed ;;
    correctness|tau|speed|plot) uptime; ls -l --time-style=full-iso "$PS"; $s ;;
    *) echo "bench_linear: unknown step $s" >&2; exit 2 ;;
  esac
done
