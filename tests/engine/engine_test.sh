#!/usr/bin/env bash
# engine_test: `pserver node` forms clusters under cluster engines (docs/cluster_engines.md).
#
#   engine_test.sh PSERVER CHECK_WORKER SOURCE_DIR
#
#   1. a real `mpirun -np 6` (Open MPI): 2 servers, 3 workers running kv_check_worker's `sum`
#      scenario, whose every sum is checked in closed form;
#   2. the same with pserver's built-in worker (no PROGRAM);
#   3. a worker that fails under mpirun: mpirun exits non-zero (never 0, never a hang);
#   4. docs/engines/pserver.sbatch run as sbatch would, with tests/engine/fake_srun standing in
#      for srun (no slurmctld here: docs/cluster_engines.md says why): its sums checked the same;
#   5. refusals: no engine in the environment, a job too small for its servers;
#   6. `--metrics-port P`: each node serves its metrics at P + its rank (case 2 runs with it);
#   7. docs/engines/kubernetes.yaml parses, and says what the nodes read (every PSERVER_*
#      variable it sets is one of launch_env.h's; replicas match the job's counts; probes and
#      ports are the metrics port's).
set -euo pipefail
pserver=$1 check_worker=$2 source=$3
work=$(mktemp -d "${TMPDIR:-/tmp}/pserver_engine_test.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"  # the address files go to the current directory
fail() { echo "engine_test: FAILED: $*" >&2; exit 1; }
command -v mpirun >/dev/null || fail "mpirun is missing (Debian's openmpi-bin; scripts/setup.sh installs it)"
# Tests run as root in CI; Open MPI refuses root without these. --oversubscribe: 6 ranks, 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpi=(mpirun --oversubscribe --bind-to none)

expect_sums() {  # expect_sums NAME LOG RC WORKERS: the run exited 0 and each worker checked its sums
  local name=$1 log=$2 rc=$3 workers=$4 passed
  passed=$(grep -c "kv_check_worker: worker [0-9]*: scenario sum passed" "$log" || true)
  if [ "$rc" != 0 ] || [ "$passed" != "$workers" ]; then
    cat "$log"
    fail "$name: exit status $rc, $passed of $workers workers passed"
  fi
  if ls "$work"/pserver-*.address >/dev/null 2>&1; then fail "$name: the scheduler left its address file"; fi
  echo "engine_test: $name: exit 0, $workers workers' sums exact"
}

rc=0
"${mpi[@]}" -np 6 "$pserver" node --servers 2 -- "$check_worker" --scenario sum >"$work/mpirun.log" 2>&1 || rc=$?
expect_sums mpirun "$work/mpirun.log" "$rc" 3

py=/usr/bin/python3
[ -x "$py" ] || py=python3
# Four free ports in a row for the metrics of the next job.
metrics=$("$py" -c '
import socket
for base in range(21000, 32000, 89):  # below the ephemeral ports
    socks = []
    try:
        for p in range(base, base + 4):
            s = socket.socket(); s.bind(("127.0.0.1", p)); socks.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in socks: s.close()')
[ -n "$metrics" ] || fail "no run of 4 free ports in 21000-32000 for the metrics"
rc=0
"${mpi[@]}" -np 4 "$pserver" node --servers 1 --metrics-port "$metrics" >"$work/builtin.log" 2>&1 || rc=$?
if [ "$rc" != 0 ] || [ "$(grep -c "worker [0-9]: round 10/10: .* as expected" "$work/builtin.log" || true)" != 2 ]; then
  cat "$work/builtin.log"; fail "mpirun with the built-in worker: exit status $rc"
fi
for rank in 0 1 2 3; do
  grep -q "serves metrics at http://127.0.0.1:$((metrics + rank))/metrics" "$work/builtin.log" ||
    { cat "$work/builtin.log"; fail "rank $rank did not serve metrics at port $((metrics + rank))"; }
done
echo "engine_test: mpirun with the built-in worker: exit 0, metrics at ports $metrics..$((metrics + 3))"

rc=0
"${mpi[@]}" -np 4 "$pserver" node --servers 1 -- sh -c 'echo "worker fails on purpose"; exit 3' \
  >"$work/failing.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "worker fails on purpose" "$work/failing.log" ||
  { cat "$work/failing.log"; fail "mpirun with failing workers: exit status $rc"; }
echo "engine_test: mpirun with failing workers: exit status $rc"
rm -f "$work"/pserver-*.address  # a scheduler killed by mpirun leaves it (named after its job)

bash -n "$source/docs/engines/pserver.sbatch" || fail "docs/engines/pserver.sbatch does not parse"
mkdir -p "$work/bin"
ln -s "$source/tests/engine/fake_srun" "$work/bin/srun"
rc=0
PATH="$work/bin:$PATH" SLURM_JOB_ID=4711 SLURM_NTASKS=5 SLURM_SUBMIT_DIR="$work" PSERVER="$pserver" \
  bash "$source/docs/engines/pserver.sbatch" 2 "$check_worker" --scenario sum >"$work/srun.log" 2>&1 || rc=$?
expect_sums "sbatch with srun's environment" "$work/srun.log" "$rc" 2

rc=0
env -u OMPI_COMM_WORLD_RANK -u PMI_RANK -u SLURM_PROCID "$pserver" node --servers 1 >"$work/none.log" 2>&1 || rc=$?
[ "$rc" = 2 ] && grep -q "no cluster engine in the environment" "$work/none.log" ||
  { cat "$work/none.log"; fail "pserver node without an engine: exit status $rc"; }
rc=0
"${mpi[@]}" -np 3 "$pserver" node --servers 2 >"$work/small.log" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "Open MPI started 3 processes: a job with --servers 2 needs at least 4" "$work/small.log" ||
  { cat "$work/small.log"; fail "a job too small for its servers: exit status $rc"; }
echo "engine_test: refused without an engine and with too few processes"

"$py" - "$source/docs/engines/kubernetes.yaml" "$source/include/pserver/launch_env.h" <<'PY' || fail "docs/engines/kubernetes.yaml"
import re, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
known = set(re.findall(r"PSERVER_[A-Z_]+", open(sys.argv[2]).read()))
used = set(re.findall(r"PSERVER_[A-Z_]+", open(sys.argv[1]).read()))
assert used <= known, f"variables the nodes do not read: {sorted(used - known)}"
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
config = by_kind["ConfigMap"]["pserver-job"]["data"]
port = int(config["PSERVER_METRICS_PORT"])
assert config["PSERVER_SCHEDULER"] == "tcp://pserver-scheduler:9000", config["PSERVER_SCHEDULER"]
assert "pserver-scheduler" in by_kind["Service"]
sets = by_kind["StatefulSet"]
assert sets["pserver-scheduler"]["spec"]["replicas"] == 1
assert sets["pserver-server"]["spec"]["replicas"] == int(config["PSERVER_NUM_SERVERS"])
assert sets["pserver-worker"]["spec"]["replicas"] == int(config["PSERVER_NUM_WORKERS"])
for name, s in sets.items():
    pod = s["spec"]["template"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port), name
    (c,) = pod["spec"]["containers"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": port}, name
    assert port in [p["containerPort"] for p in c["ports"]], name
    assert any(e.get("configMapRef", {}).get("name") == "pserver-job" for e in c["envFrom"]), name
print(f"engine_test: docs/engines/kubernetes.yaml: {len(docs)} objects, probes on the metrics port {port}")
PY
echo "engine_test: passed"
