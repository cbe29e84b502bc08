"""The Python worker's side of the Python-against-C++ benchmark (python/bench/compare.sh).

Run under `pserver launch --servers 1 --workers 1`. The same workloads as bench/kv_bench_worker.cc,
request for request, so that the ratio of the two is the cost of the Python front alone:

    push_4k, pull_4k     one key of 1,024 float32 (4 KiB), 32 requests in flight
    push_1m, pull_1m     one key of 262,144 float32 (1 MiB), 8 in flight
    push_100k, pull_100k 100,000 keys of a width-1 float32 table, 4 in flight: set s (of 4,
                         cycled) holds 97 j + s for j < 100,000, spread over the servers by hashing

Each runs for --seconds after a warm-up, and prints one line per workload:
``python_bench <workload> <requests/s> <keys/s> <MB/s>``.
"""

import argparse
import collections
import time

import numpy as np

import pserver

WORKLOADS = (("4k", 1024, 1, 32), ("1m", 262144, 1, 8), ("100k", 1, 100000, 4))


def run(kv, table, keys_sets, values_sets, window, seconds, shape):
    """Requests of `shape` ('push' or 'pull') with `window` in flight for `seconds`; requests done."""
    in_flight = collections.deque()
    outs = [np.empty_like(values_sets[0]) for _ in range(window)]
    done, i = 0, 0
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    while True:
        if len(in_flight) == window:
            kv.wait(in_flight.popleft())
            done += 1
            if time.perf_counter() >= deadline:
                break
        s = i % len(keys_sets)
        if shape == "push":
            in_flight.append(kv.push(table, keys_sets[s], values_sets[s]))
        else:
            in_flight.append(kv.pull(table, keys_sets[s], outs[i % window])[0])
        i += 1
    elapsed = time.perf_counter() - start
    while in_flight:
        kv.wait(in_flight.popleft())
    return done, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    node = pserver.Node.start()
    kv = pserver.KVWorker(node)
    for name, width, nkeys, window in WORKLOADS:
        table = node.declare_table(f"bench_{name}", dtype=np.float32, width=width)
        if nkeys == 1:
            keys_sets = [np.zeros(1, dtype=np.uint64)]
        else:
            keys_sets = [np.arange(nkeys, dtype=np.uint64) * np.uint64(97) + np.uint64(s) for s in range(4)]
        values_sets = [np.full(len(k) * width, 0.5, dtype=np.float32) for k in keys_sets]
        for shape in ("push", "pull"):
            run(kv, table, keys_sets, values_sets, window, 0.2, shape)  # warm-up (and the pulls' rows exist)
            done, elapsed = run(kv, table, keys_sets, values_sets, window, args.seconds, shape)
            rate = done / elapsed
            keys = rate * len(keys_sets[0])
            mb = rate * len(keys_sets[0]) * width * 4 / 1e6
            print(f"python_bench {shape}_{name} {rate:.1f} {keys:.0f} {mb:.1f}", flush=True)
    node.finalize()


if __name__ == "__main__":
    main()
