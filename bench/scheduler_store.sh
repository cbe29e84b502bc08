#!/usr/bin/env bash
# What a durable scheduler costs and how long its restart pauses a job (docs/durability.md,
# section 6). A local job of real processes: a scheduler, 2 servers, 2 workers running the
# built-in check workload (every round: 1000 keys pushed 4 times in flight, a barrier, pulled
# back and checked), which needs the scheduler once per round (the barrier).
#   1. Rounds per second for SECONDS seconds without a store, with the file store and with etcd
#      (each barrier release is recorded before it is sent): the cost of recording.
#   2. RUNS times per store: the scheduler SIGKILLed and started again at once on its store; the
#      pause is from the kill until both workers finished a round begun after it.
# Prints medians and ranges. Needs etcd (Debian's etcd-server) and python3.
#   bench/scheduler_store.sh [BUILD_DIR] [RUNS] [SECONDS]
set -euo pipefail
build=$(realpath "${1:-build}")
runs=${2:-10}
seconds=${3:-3}
pserver="$build/tools/pserver/pserver"
d=$(mktemp -d)
etcd_pid=""
cleanup() {
  pkill -KILL -P $$ 2>/dev/null || true
  [ -n "$etcd_pid" ] && kill -KILL "$etcd_pid" 2>/dev/null
  rm -rf "$d"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now_ns() { python3 -c 'import time; print(time.monotonic_ns())'; }

ep=$(free_port) pp=$(free_port)
etcd --name bench --data-dir "$d/etcd" --listen-client-urls "http://127.0.0.1:$ep" \
  --advertise-client-urls "http://127.0.0.1:$ep" --listen-peer-urls "http://127.0.0.1:$pp" \
  --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "bench=http://127.0.0.1:$pp" >"$d/etcd.log" 2>&1 &
etcd_pid=$!
until grep -q "ready to serve client requests" "$d/etcd.log"; do sleep 0.05; done

# job STORE_ARGS...: starts the job (scheduler args + store flags); sets port, sched, nodes.
job() {
  rm -f "$d/stop" "$d"/w*.log
  port=$(free_port)
  "$pserver" scheduler --port "$port" --num-servers 2 --num-workers 2 "$@" >"$d/sched.log" 2>&1 &
  sched=$!
  until grep -q "scheduler listening at" "$d/sched.log"; do sleep 0.01; done
  nodes=()
  for s in 0 1; do
    "$pserver" server --scheduler "tcp://127.0.0.1:$port" >"$d/s$s.log" 2>&1 &
    nodes+=($!)
  done
  for w in 0 1; do
    "$pserver" worker --scheduler "tcp://127.0.0.1:$port" --keys 1000 --pushes 4 --rounds 1000000 \
      --progress-times --stop-file "$d/stop" >"$d/w$w.log" 2>&1 &
    nodes+=($!)
  done
  until grep -q "^progress" "$d/w0.log" 2>/dev/null && grep -q "^progress" "$d/w1.log" 2>/dev/null; do sleep 0.01; done
}
end_job() {
  touch "$d/stop"
  for p in "${nodes[@]}"; do wait "$p" || { echo "a node failed:"; tail -5 "$d"/*.log; exit 1; }; done
  wait "$sched" 2>/dev/null || true
}

echo "1. rounds per second over $seconds s (2 workers)"
for store in none file etcd; do
  args=()
  case $store in
    file) rm -rf "$d/fs"; args=(--store "file:$d/fs") ;;
    etcd) args=(--store "etcd:http://127.0.0.1:$ep/bench$RANDOM") ;;
  esac
  job "${args[@]}"
  before=$(grep -c "^progress " "$d/w0.log")
  sleep "$seconds"
  after=$(grep -c "^progress " "$d/w0.log")
  end_job
  python3 -c "print(f'   {\"$store\":5s} {($after - $before) / $seconds:8.0f} rounds/s')"
done

echo "2. scheduler SIGKILLed and started again: pause until both workers finished a later round ($runs runs each)"
for store in file etcd; do
  pauses=()
  for ((i = 0; i < runs; i++)); do
    if [ "$store" = file ]; then rm -rf "$d/fs"; url="file:$d/fs"; else url="etcd:http://127.0.0.1:$ep/restart$i$RANDOM"; fi
    job --store "$url" --heartbeat-timeout-ms 10000
    sleep 0.3
    kill -KILL "$sched"
    killed=$(now_ns)
    wait "$sched" 2>/dev/null || true
    "$pserver" scheduler --port "$port" --num-servers 2 --num-workers 2 --store "$url" --heartbeat-timeout-ms 10000 \
      >"$d/sched.log" 2>&1 &
    sched=$!
    # Both workers finish a round that began after the kill.
    pause=$(python3 - "$d/w0.log" "$d/w1.log" "$killed" <<'EOF'
import sys, time
logs, killed = sys.argv[1:3], int(sys.argv[3])
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    done = []
    for log in logs:
        ends = [int(l.split()[4]) for l in open(log) if l.startswith("progress ") and int(l.split()[3]) > killed]
        done.append(min(ends) if ends else None)
    if all(done):
        print(f"{(max(done) - killed) / 1e6:.0f}")
        sys.exit(0)
    time.sleep(0.01)
print("none")
EOF
)
    pauses+=("$pause")
    end_job
  done
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[1:] if x!='none']; print(f'   {\"$store\":5s} pause median {statistics.median(v):.0f} ms, range {min(v):.0f}-{max(v):.0f} ms over {len(v)} runs ({len(sys.argv)-1-len(v)} without progress)')" "${pauses[@]}"
done
