#!/usr/bin/env bash
# How long a replicated job pauses when a server is SIGKILLed (docs/durability.md, section 4): a
# local job of real processes (scheduler with --replicas 2, 3 servers, 2 kv_check_workers pushing
# with 32 requests in flight); one server is SIGKILLed, and the time from the kill to (a) the
# scheduler's failover ("serves its keys from epoch") and (b) the last worker sending its
# unanswered requests to the new owners ("sends N part(s) ... again": from then on every worker
# makes progress) is printed, RUNS times (default 10), then medians and ranges. Every run's
# workers then check their exact sums.
#   bench/failover_time.sh [BUILD_DIR] [RUNS]
set -euo pipefail
build=${1:-build}
runs=${2:-10}
failover=()
resumed=()
stamp_of() { date -d "$(sed -E 's/^\[([0-9-]+ [0-9:.]+)\].*/\1/' <<<"$1")" +%s.%N; }
for ((i = 0; i < runs; i++)); do
  d=$(mktemp -d)
  "$build/tools/pserver/pserver" scheduler --host 127.0.0.1 --port 0 --num-servers 3 --num-workers 2 \
    --replicas 2 --heartbeat-timeout-ms 10000 --address-file "$d/addr" >"$d/scheduler.log" 2>&1 &
  pids=($!)
  while [ ! -s "$d/addr" ]; do sleep 0.02; done
  addr=$(cat "$d/addr")
  for s in 0 1 2; do
    "$build/tools/pserver/pserver" server --scheduler "$addr" --host 127.0.0.1 >"$d/server$s.log" 2>&1 &
    pids+=($!)
  done
  for w in 0 1; do
    PSERVER_ROLE=worker PSERVER_SCHEDULER=$addr PSERVER_HOST=127.0.0.1 \
      "$build/tests/kv_check_worker" --scenario failover --seed "$i" --stop-file "$d/stop" >"$d/worker$w.log" 2>&1 &
    pids+=($!)
  done
  while ! grep -qs "failover: pushing" "$d/worker0.log" || ! grep -qs "failover: pushing" "$d/worker1.log"; do sleep 0.02; done
  killed_at=$(date +%s.%N)
  kill -9 "${pids[$((1 + i % 3))]}"
  while ! grep -q "serves its keys" "$d/scheduler.log"; do sleep 0.005; done
  f=$(echo "($(stamp_of "$(grep -m1 'serves its keys' "$d/scheduler.log")") - $killed_at) * 1000" | bc)
  # The last worker to send its requests to the dead server again (a worker with none in flight
  # there sends nothing, and was never held up).
  last=$killed_at
  for w in 0 1; do
    line=$(grep -m1 "to dead servers again" "$d/worker$w.log" || true)
    if [ -n "$line" ]; then
      t=$(stamp_of "$line")
      if (($(echo "$t > $last" | bc))); then last=$t; fi
    fi
  done
  r=$(echo "($last - $killed_at) * 1000" | bc)
  failover+=("$f")
  resumed+=("$r")
  touch "$d/stop"
  ok=0
  for w in 0 1; do
    wait "${pids[$((4 + w))]}" && ok=$((ok + 1)) || true
  done
  echo "run $i: failover after ${f%.*} ms, workers resent after ${r%.*} ms; $ok of 2 workers checked exact sums"
  [ "$ok" = 2 ] || { tail -5 "$d"/worker*.log; exit 1; }
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$d"
done
summary() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %.0f ms, range [%.0f, %.0f] ms over %d kills", a[int((NR+1)/2)], a[1], a[NR], NR}'; }
echo "failover view: $(summary "${failover[@]}")"
echo "workers resending: $(summary "${resumed[@]}")"
