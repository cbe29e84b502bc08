#!/usr/bin/env bash
# The Python worker's throughput as a ratio to the C++ worker's, in one run (docs/benchmarks.md):
#
#   python/bench/compare.sh [BUILD_DIR] [REPETITIONS] [SECONDS]
#
# Alternates `pserver launch --servers 1 --workers 1` of python_bench.py and of its C++ twin,
# bench/kv_bench_worker (the same requests), REPETITIONS times each (default 3) for SECONDS per
# workload (default 2), and prints per workload the median requests/s, keys/s or MB/s of each, the
# range, and the ratio of the medians.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build} reps=${2:-3} seconds=${3:-2}
python=$(sed -n 's/^PSERVER_PYTHON:[A-Z]*=//p' "$build/CMakeCache.txt")
[ -x "$python" ] || { echo "compare.sh: no Python interpreter in $build/CMakeCache.txt (PSERVER_PYTHON)" >&2; exit 1; }
export PYTHONPATH="$build/python${PYTHONPATH:+:$PYTHONPATH}"
out=$(mktemp) log=$(mktemp)
trap 'rm -f "$out" "$log"' EXIT
for ((r = 1; r <= reps; r++)); do
  "$build/tools/pserver/pserver" launch --servers 1 --workers 1 --no-prefix -- \
    "$python" "$root/python/bench/python_bench.py" --seconds "$seconds" 2>>"$log" | grep '^python_bench ' >>"$out" ||
    { tail -n 20 "$log" >&2; echo "compare.sh: the Python run failed" >&2; exit 1; }
  "$build/tools/pserver/pserver" launch --servers 1 --workers 1 --no-prefix -- \
    "$build/bench/kv_bench_worker" --seconds "$seconds" 2>>"$log" | grep '^cpp_bench ' >>"$out" ||
    { tail -n 20 "$log" >&2; echo "compare.sh: the C++ run failed" >&2; exit 1; }
done
"$python" - "$out" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    who, workload, rate, keys, mb = line.split()
    runs[(workload, who)].append((float(rate), float(keys), float(mb)))
print(f"{'workload':<10} {'Python req/s':>13} {'C++ req/s':>13} {'Python MB/s (range)':>24} {'C++ MB/s (range)':>24} {'ratio':>6}")
for workload in sorted({w for w, _ in runs}, key=lambda w: (w.split('_')[1], w)):
    py, cpp = runs[(workload, "python_bench")], runs[(workload, "cpp_bench")]
    if not py or not cpp:
        sys.exit(f"compare.sh: {workload}: missing runs (python {len(py)}, C++ {len(cpp)})")
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    rng = lambda xs: f"{min(x[2] for x in xs):.0f}-{max(x[2] for x in xs):.0f}"
    print(f"{workload:<10} {med(py, 0):>13.0f} {med(cpp, 0):>13.0f} {med(py, 2):>14.0f} ({rng(py):>9}) "
          f"{med(cpp, 2):>14.0f} ({rng(cpp):>9}) {med(py, 0) / med(cpp, 0):>6.2f}")
print(f"({len(next(iter(runs.values())))} runs each of python_bench.py and kv_bench_worker, alternating)")
PY
