#!/usr/bin/env bash
# A real Prometheus server (Debian's `prometheus`) on loopback scrapes a local cluster started by
# `pserver launch --metrics-port`, and its HTTP query API shows the request counters growing while
# the job runs (docs/metrics.md). The workers (kv_check_worker --scenario failover) push until a
# stop file appears and then check their sums exactly, so the job's result is checked too.
#
# Usage: prometheus_test.sh PSERVER_BIN CHECK_WORKER (python3 asks the query API; stdlib only)
# Synchronisation is by polling the query API (bounded by a deadline), never by sleeping for a
# guess of how long something takes.
set -euo pipefail
pserver=$1 worker=$2 python=python3
servers=2 workers=2
nodes=$((1 + servers + workers))

if ! command -v prometheus > /dev/null; then
  echo "prometheus_test: Debian's prometheus is not installed (scripts/setup.sh installs it)" >&2
  exit 1
fi

work=$(mktemp -d)
launch_pid="" prom_pid=""
cleanup() {
  local rc=$?
  [ -n "$launch_pid" ] && kill "$launch_pid" 2> /dev/null || true
  [ -n "$prom_pid" ] && kill "$prom_pid" 2> /dev/null || true
  wait 2> /dev/null || true
  if [ "$rc" != 0 ]; then  # what the job and Prometheus said, for the failure above
    for log in launch prometheus; do
      [ -f "$work/$log.log" ] && { echo "--- $log.log:"; tail -n 60 "$work/$log.log"; } >&2
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Free ports: a run of $nodes for the cluster's metrics, and one for Prometheus.
ports=$("$python" - "$nodes" <<'PY'
import socket, sys
n = int(sys.argv[1])
def free_run(start, n):
    socks = []
    try:
        for p in range(start, start + n):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        return True
    except OSError:
        return False
    finally:
        for s in socks: s.close()
s = socket.socket(); s.bind(("127.0.0.1", 0)); prom = s.getsockname()[1]; s.close()
# Below the kernel's ephemeral range (32768 up), which the job's own connections take from.
for base in range(20000, 32000, 97):
    if base <= prom < base + n: continue
    if free_run(base, n):
        print(base, prom); break
PY
)
[ -n "$ports" ] || { echo "prometheus_test: no run of $nodes free ports in 20000-32000" >&2; exit 1; }
read -r base prom_port <<< "$ports"
echo "prometheus_test: cluster metrics on ports $base..$((base + nodes - 1)), prometheus on $prom_port"

targets=""
for ((i = 0; i < nodes; i++)); do targets+="${targets:+, }'127.0.0.1:$((base + i))'"; done
cat > "$work/prometheus.yml" <<YML
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pserver
    static_configs:
      - targets: [$targets]
YML

prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn > "$work/prometheus.log" 2>&1 &
prom_pid=$!

"$pserver" launch --servers $servers --workers $workers --metrics-port "$base" -- \
  "$worker" --scenario failover --stop-file "$work/stop" > "$work/launch.log" 2>&1 &
launch_pid=$!

# query EXPR [DEADLINE_S]: polls Prometheus until EXPR has a result, printing its value.
query() {
  "$python" - "$prom_port" "$1" "${2:-120}" "$launch_pid" <<'PY'
import json, os, sys, time, urllib.parse, urllib.request
port, expr, limit, launcher = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
deadline = time.monotonic() + limit
url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
while time.monotonic() < deadline:
    try:
        os.kill(launcher, 0)
    except ProcessLookupError:
        sys.exit(f"prometheus_test: the job ended before Prometheus saw {expr}")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            result = json.load(r)["data"]["result"]
        if result:
            print(result[0]["value"][1]); sys.exit(0)
    except (OSError, ValueError, KeyError):
        pass  # Prometheus still starting
    time.sleep(0.2)  # a poll interval, not a wait for an event
sys.exit(f"prometheus_test: no result for {expr} within {limit:.0f} s")
PY
}

# pushes ROLE: the push requests (workers) or parts (servers) of the job's table, summed over
# the nodes of ROLE (pserver_node_info says which instance is which).
pushes() {
  echo "sum(pserver_requests_total{job=\"pserver\",op=\"push\",table=\"failover\"} * on(instance) group_left pserver_node_info{role=\"$1\"})"
}

# Every node is scraped: the scheduler, both servers and both workers up.
up=$(query "count(up{job=\"pserver\"} == 1) == $nodes")
echo "prometheus_test: $up of $nodes targets up"
# The workers' push counter, then a larger value of it: it grew while the job ran.
first=$(query "$(pushes worker) > 0")
echo "prometheus_test: pushes the workers made: $first"
later=$(query "$(pushes worker) > $first")
echo "prometheus_test: and later: $later"
# The servers' side, the latency histogram and the rows are there as well.
served=$(query "$(pushes server) > 0")
echo "prometheus_test: push parts the servers took: $served"
p99=$(query 'histogram_quantile(0.99, sum by (le) (rate(pserver_request_duration_seconds_bucket{job="pserver",op="push"}[5s]))) > 0')
echo "prometheus_test: 99th percentile push latency: $p99 s"
rows=$(query 'sum(pserver_table_rows{job="pserver",table="failover"}) == 2000')
echo "prometheus_test: rows held by the servers: $rows"

touch "$work/stop"
status=0
wait "$launch_pid" || status=$?
launch_pid=""
if [ "$status" -ne 0 ]; then
  cat "$work/launch.log" >&2
  echo "prometheus_test: the job failed with status $status" >&2
  exit 1
fi
grep -q "metrics at http://127.0.0.1:PORT/metrics: scheduler $base, servers $((base + 1))-$((base + servers)), workers $((base + servers + 1))-$((base + nodes - 1))" "$work/launch.log" || {
  cat "$work/launch.log" >&2
  echo "prometheus_test: the launcher did not list the metrics ports" >&2
  exit 1
}
echo "prometheus_test: passed (the job's sums were checked by its workers)"
