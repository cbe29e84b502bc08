"""A worker of python_test (python/tests/python_test.sh), run under `pserver launch`.

Every worker pushes (rank + 1) * f(key) to the same keys of a table of each value type, as
vectors (width 1) and as rows (width 4); after a barrier every worker pulls and checks the
closed-form sum f(key) * W(W+1)/2 exactly. It also checks: arrays cross without copies (a pull
fills the very array handed in as `out`); wrong dtypes, shapes and unsorted keys raise ValueError
before anything is sent; a callback runs off the calling thread, on pserver's dispatcher, with
the request's error or None; push_pull; bounded delay; stale-synchronous clocks. Prints one
line per check; exit status 0 only when every check passed (a failed check ends the job through
finalize_with_error).
"""

import os
import sys
import threading

import numpy as np

import pserver

DTYPES = (np.float32, np.float64, np.int32, np.int64)


def f(keys, width):
    """The per-key, per-column base value: small integers, exact in every dtype."""
    base = (keys % 97).astype(np.int64) + 1
    return (base[:, None] * (np.arange(width, dtype=np.int64) + 1)[None, :]).reshape(len(keys), width)


def check(node, what, ok):
    if not ok:
        node.finalize_with_error(f"python check failed: {what}")
        print(f"check_worker: worker {node.rank}: FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"check_worker: worker {node.rank}: {what}: ok", flush=True)


def expect_error(node, what, exc_type, fn):
    try:
        fn()
    except exc_type as e:
        check(node, f"{what} raises {exc_type.__name__} ({e})", isinstance(e, pserver.Error))
        return
    check(node, f"{what} raises {exc_type.__name__}", False)


def main():
    node = pserver.Node.start()
    kv = pserver.KVWorker(node)
    rank, workers = node.rank, node.num_workers
    rng = np.random.default_rng(20261206)  # the same keys on every worker
    keys = np.unique(rng.integers(0, 1 << 62, size=3000, dtype=np.uint64))
    print(f"check_worker: worker {rank} of {workers}, {node.num_servers} servers, {len(keys)} keys, seed 20261206",
          flush=True)
    # The launcher's --metrics-port 0: every node on a free port of its own; without, none.
    if os.environ.get("PSERVER_METRICS_PORT") == "0":
        check(node, f"metrics served at {node.metrics_address!r}",
              node.metrics_address.startswith("127.0.0.1:") and int(node.metrics_address.split(":")[1]) > 0)
    elif "PSERVER_METRICS_PORT" not in os.environ:
        check(node, "no metrics without a port", node.metrics_address == "")

    tables = []
    for dtype in DTYPES:
        for width in (1, 4):
            t = node.declare_table(f"sum_{np.dtype(dtype).name}_{width}", dtype=dtype, width=width)
            values = (f(keys, width) * (rank + 1)).astype(dtype)
            if width == 1:
                values = values.reshape(len(keys))
            tables.append((t, kv.push(t, keys, values)))
    for t, ts in tables:
        kv.wait(ts)
    node.barrier()

    total = workers * (workers + 1) // 2
    for t, _ in tables:
        out = np.full((len(keys), t.width) if t.width > 1 else len(keys), -1, dtype=t.dtype)
        ts, got = kv.pull(t, keys, out)
        kv.wait(ts)
        want = (f(keys, t.width) * total).astype(t.dtype).reshape(out.shape)
        check(node, f"{t.name}: every sum exact", np.array_equal(got, want))
        check(node, f"{t.name}: pulled into the array handed in", got is out)
    # Many pulls in flight at once, each into its own array, waited for in order: the library
    # writes each result when its request completes, long after pull() returned.
    t1 = tables[0][0]
    want1 = (f(keys, 1) * total).astype(t1.dtype).reshape(len(keys))
    in_flight = [kv.pull(t1, keys) for _ in range(64)]
    for ts, _ in in_flight:
        kv.wait(ts)
    check(node, "64 pulls in flight, every one exact", all(np.array_equal(got, want1) for _, got in in_flight))
    # A pull without `out` gets an array of its own of the table's dtype and shape.
    t4 = tables[-1][0]
    ts, fresh = kv.pull(t4, keys[:10])
    kv.wait(ts)
    check(node, "a new pull array has the table's dtype and shape", fresh.dtype == t4.dtype and fresh.shape == (10, 4))

    # Errors at the call: nothing is sent.
    t = tables[0][0]  # float32, width 1
    expect_error(node, "float64 values for a float32 table", ValueError,
                 lambda: kv.push(t, keys, np.zeros(len(keys), dtype=np.float64)))
    expect_error(node, "int64 keys", ValueError, lambda: kv.push(t, keys.astype(np.int64), np.zeros(len(keys), np.float32)))
    expect_error(node, "unsorted keys", ValueError,
                 lambda: kv.push(t, keys[::-1].copy(), np.zeros(len(keys), np.float32)))
    expect_error(node, "one value too few", ValueError, lambda: kv.push(t, keys, np.zeros(len(keys) - 1, np.float32)))
    expect_error(node, "a strided values array", ValueError,
                 lambda: kv.push(t, keys, np.zeros(2 * len(keys), np.float32)[::2]))
    unaligned = np.frombuffer(bytearray(4 * len(keys) + 1), dtype=np.float32, offset=1)
    expect_error(node, "an unaligned values array", ValueError, lambda: kv.push(t, keys, unaligned))
    expect_error(node, "uint64 keys of big-endian order", ValueError,
                 lambda: kv.push(t, keys.astype(">u8"), np.zeros(len(keys), np.float32)))
    check(node, "keys of dtype 'Q' (numpy's uint64 under another name) are taken",
          kv.wait(kv.push(t, keys.astype(np.dtype("Q")), np.zeros(len(keys), np.float32))) is None)
    expect_error(node, "rows of the wrong width", ValueError,
                 lambda: kv.push(tables[1][0], keys, np.zeros((len(keys), 3), np.float32)))
    read_only = np.zeros(len(keys), np.float32)
    read_only.setflags(write=False)
    expect_error(node, "a read-only out", ValueError, lambda: kv.pull(t, keys, read_only))
    expect_error(node, "a table dtype that is not one", ValueError, lambda: node.declare_table("bad", dtype=np.uint8))
    expect_error(node, "an unknown update rule", pserver.NotFoundError, lambda: node.declare_table("bad_rule", updater="nope"))
    expect_error(node, "a timestamp never issued", ValueError, lambda: kv.wait(1 << 40))

    # A callback runs once, off the calling thread, with None for success.
    seen = []
    done = threading.Event()

    def on_done(error):
        seen.append((threading.get_ident(), error))
        done.set()

    sums = node.declare_table("callback_sums", dtype=np.float64)
    ts = kv.push(sums, keys, np.ones(len(keys)), callback=on_done)
    kv.wait(ts)
    done.wait(60)
    check(node, "a callback ran once, off the calling thread, without error",
          len(seen) == 1 and seen[0][0] != threading.get_ident() and seen[0][1] is None)

    # push_pull: the values after this worker's push (others may have pushed too: at least ours).
    ts, after = kv.push_pull(sums, keys, np.ones(len(keys)))
    kv.wait(ts)
    ok = bool(np.all(after >= 2)) and bool(np.all(after <= 2 * workers))
    if not ok:
        print("push_pull values:", np.unique(after), flush=True)
    check(node, "push_pull returns values including the push", ok)

    # Bounded delay 0: each request waits for the one before; a chain of pushes then a pull sees all.
    sequential = node.declare_table("sequential_sums", dtype=np.float64)
    kv.set_max_delay(sequential, 0)
    last = [kv.push(sequential, keys[:5], np.full(5, 1.0)) for _ in range(20)][-1]
    kv.wait(last)
    node.barrier()
    ts, five = kv.pull(sequential, keys[:5])
    kv.wait(ts)
    check(node, "sequential pushes of every worker all applied", bool(np.all(five == 20 * workers)))

    # Stale-synchronous rounds, staleness 0: a pull at clock c waits until every worker reached
    # clock c, so it sees every worker's pushes of the rounds before.
    ssp = node.declare_table("ssp_sums", dtype=np.float64)
    kv.set_staleness(ssp, 0)
    seen_all = True
    for c in range(1, 6):
        kv.push(ssp, keys[:3], np.ones(3))
        check(node, f"clock {c} advanced", kv.clock() == c and kv.current_clock == c)
        ts, got = kv.pull(ssp, keys[:3])
        kv.wait(ts)
        seen_all = seen_all and bool(np.all(got >= c * workers)) and bool(np.all(got <= 5 * workers))
    check(node, "each stale-synchronous pull saw every worker's earlier rounds", seen_all)

    node.finalize()
    print(f"check_worker: worker {rank}: every check passed", flush=True)


if __name__ == "__main__":
    main()
