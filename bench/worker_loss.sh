#!/usr/bin/env bash
# What losing a worker costs `pserver train linear` (docs/durability.md, section 5): DBPG on a
# seeded synthetic set (ROWS rows, 50,000 features) with 3 workers and 2 servers, 30 passes,
# once undisturbed and then once per worker rank, SIGKILLing that worker as soon as pass 5 is
# printed. For each run it prints the pass the loss fell in, that pass's time against the median
# pass, how many passes later the objective is back within 1e-5 of the undisturbed run's at the
# same pass, the final objective's relative difference, and the rows the last pass covered
# (every row of the set when the lost data was taken over).
#   bench/worker_loss.sh [BUILD_DIR] [ROWS]
set -euo pipefail
build=$(realpath "${1:-build}")
rows=${2:-200000}
pserver="$build/tools/pserver/pserver"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$pserver" gen-data --out "$d/data.svm" --rows "$rows" --features 50000 --seed 5 >/dev/null

# train REPORT [RANK]: trains; with RANK, SIGKILLs that worker once pass 5 is printed.
train() {
  "$pserver" train linear --data "$d/data.svm" --workers 3 --servers 2 --report "$d/$1" --cache-dir "" \
    --max-passes 30 --tol 1e-9 >"$d/log" 2>&1 &
  local launcher=$!
  if [ $# -gt 1 ]; then
    until grep -q "pass   5" "$d/log"; do sleep 0.01; done
    for p in $(pgrep -P "$launcher"); do
      if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "PSERVER_ROLE=worker" &&
        tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "PSERVER_RANK_HINT=$2"; then
        kill -9 "$p"
      fi
    done
  fi
  wait "$launcher"
}

train quiet.json
for rank in 0 1 2; do
  train "lost$rank.json" "$rank"
  python3 - "$d/quiet.json" "$d/lost$rank.json" "$rank" <<'EOF'
import json, statistics, sys
quiet, lost = (json.load(open(f))["per_pass"] for f in sys.argv[1:3])
final_q, final_l = quiet[-1]["objective"], lost[-1]["objective"]
took = [p["seconds"] - (lost[i - 1]["seconds"] if i else 0) for i, p in enumerate(lost)]
at = next(i for i, p in enumerate(lost) if p["workers"] < 3)
back = next((i - at for i in range(at, len(lost))
             if abs(lost[i]["objective"] - quiet[i]["objective"]) <= 1e-5 * quiet[i]["objective"]), None)
print(f"worker {sys.argv[3]} lost in pass {at + 1}: that pass {took[at]:.2f} s (median pass {statistics.median(took[1:]):.2f} s), "
      f"objective back within 1e-5 of the undisturbed run after {back} passes, final relative difference "
      f"{abs(final_l - final_q) / final_q:.2g}, last pass's rows {lost[-1]['rows']}")
EOF
done
