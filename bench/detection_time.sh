#!/usr/bin/env bash
# How long the scheduler takes to declare a SIGKILLed server dead (docs/durability.md, section 1):
# a local job of real processes (scheduler, 2 servers, a kv_check_worker pushing in a loop); one
# server is SIGKILLed, and the time from the kill to the scheduler's "is dead" log line is printed,
# RUNS times (default 10), then the median and range. The heartbeat timeout is 10 s, so every
# figure well below that comes from the connection's reset (Transport::PeersDown).
#   bench/detection_time.sh [BUILD_DIR] [RUNS]
set -euo pipefail
build=${1:-build}
runs=${2:-10}
figures=()
for ((i = 0; i < runs; i++)); do
  d=$(mktemp -d)
  "$build/tools/pserver/pserver" scheduler --host 127.0.0.1 --port 0 --num-servers 2 --num-workers 1 \
    --heartbeat-timeout-ms 10000 --address-file "$d/addr" >"$d/scheduler.log" 2>&1 &
  pids=($!)
  while [ ! -s "$d/addr" ]; do sleep 0.02; done
  addr=$(cat "$d/addr")
  for s in 0 1; do
    "$build/tools/pserver/pserver" server --scheduler "$addr" --host 127.0.0.1 >"$d/server$s.log" 2>&1 &
    pids+=($!)
  done
  PSERVER_ROLE=worker PSERVER_SCHEDULER=$addr PSERVER_HOST=127.0.0.1 \
    "$build/tests/kv_check_worker" --scenario wait_forever >"$d/worker.log" 2>&1 &
  pids+=($!)
  while ! grep -q pushing "$d/worker.log"; do sleep 0.02; done
  killed_at=$(date +%s.%N)
  kill -9 "${pids[2]}"
  while ! grep -q "is dead" "$d/scheduler.log"; do sleep 0.005; done
  stamp=$(grep -m1 "is dead" "$d/scheduler.log" | sed -E 's/^\[([0-9-]+ [0-9:.]+)\].*/\1/')
  ms=$(echo "($(date -d "$stamp" +%s.%N) - $killed_at) * 1000" | bc)
  figures+=("$ms")
  echo "run $i: declared dead after ${ms%.*} ms: $(grep -m1 -o 'is dead: .*' "$d/scheduler.log")"
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$d"
done
printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median %.0f ms, range [%.0f, %.0f] ms over %d kills\n", a[int((NR+1)/2)], a[1], a[NR], NR}'
