"""Sparse logistic regression by minibatch SGD, as a pserver worker in Python.

    pserver launch --servers 2 --workers 4 -- \
        python3 examples/python/logistic_sgd.py --train data/spam/train.svm --test data/spam/test.svm

Each worker reads every ``--workers``-th row of the libsvm training file (its share), and for each
minibatch: pulls the weights of the features the batch touches, computes the logistic loss's
gradient with numpy, and pushes it; the servers apply it with their "sgd" rule (w -= lr * g).
Requests are asynchronous: the pull of the next batch is issued before the push of this one
has completed (one batch of delay, bounded by ``--max-delay``). After the last epoch worker 0
pulls the model and prints the held-out log-loss and AUC.
"""

import argparse
import sys
import time

import numpy as np

import pserver


def read_libsvm(path):
    """(labels in {0, 1}, CSR rows as (indptr, feature ids uint64, values float32))."""
    labels, indptr, ids, vals = [], [0], [], []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            try:
                labels.append(1.0 if float(parts[0]) > 0 else 0.0)
                for item in parts[1:]:
                    k, v = item.split(":")
                    ids.append(int(k))
                    vals.append(float(v))
            except ValueError:
                sys.exit(f"logistic_sgd: {path}:{line_no}: not a libsvm line: {line[:60]!r}")
            indptr.append(len(ids))
    return (np.array(labels), np.array(indptr), np.array(ids, dtype=np.uint64), np.array(vals, dtype=np.float32))


def margins(indptr, ids, vals, keys, weights):
    """x_i . w for each row (0 for a row without features), the rows' features looked up in
    (sorted keys, weights)."""
    rows = len(indptr) - 1
    contributions = weights[np.searchsorted(keys, ids)] * vals
    return np.bincount(np.repeat(np.arange(rows), np.diff(indptr)), weights=contributions, minlength=rows)


def batch_rows(data, rows):
    labels, indptr, ids, vals = data
    starts, ends = indptr[rows], indptr[rows + 1]
    take = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if len(rows) else np.array([], int)
    sub_indptr = np.concatenate([[0], np.cumsum(ends - starts)])
    return labels[rows], sub_indptr, ids[take], vals[take]


def auc(labels, scores):
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    pos = labels > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg) if n_pos and n_neg else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.5)
    ap.add_argument("--max-delay", type=int, default=2, help="requests in flight beyond one (bounded delay)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    node = pserver.Node.start()
    kv = pserver.KVWorker(node)
    rank, workers = node.rank, node.num_workers
    w = node.declare_table("logistic_w", dtype=np.float32, updater="sgd", params={"lr": args.lr})
    kv.set_max_delay(w, args.max_delay)

    data = read_libsvm(args.train)
    mine = np.arange(rank, len(data[0]), workers)
    rng = np.random.default_rng(args.seed + rank)
    print(f"worker {rank}: {len(mine)} of {len(data[0])} rows, seed {args.seed + rank}", flush=True)

    start = time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(mine)
        loss_sum, pending = 0.0, []
        for b in range(0, len(mine), args.batch):
            y, indptr, ids, vals = batch_rows(data, np.sort(mine[b:b + args.batch]))
            keys = np.unique(ids)
            ts, weights = kv.pull(w, keys)
            kv.wait(ts)
            p = 1.0 / (1.0 + np.exp(-margins(indptr, ids, vals, keys, weights)))
            loss_sum += -np.sum(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
            # d loss / d w_k = sum over the batch's rows of (p - y) x_ik, averaged over the batch.
            residual = np.repeat((p - y).astype(np.float32), np.diff(indptr)) * vals
            grad = np.zeros(len(keys), dtype=np.float32)
            np.add.at(grad, np.searchsorted(keys, ids), residual)
            pending.append(kv.push(w, keys, grad / len(y)))
        for ts in pending:
            kv.wait(ts)
        print(f"worker {rank}: epoch {epoch}  train log-loss {loss_sum / len(mine):.5f}  {time.time() - start:.1f}s",
              flush=True)
    node.barrier()

    if rank == 0:
        labels, indptr, ids, vals = read_libsvm(args.test)
        keys = np.unique(ids)
        ts, weights = kv.pull(w, keys)
        kv.wait(ts)
        p = 1.0 / (1.0 + np.exp(-margins(indptr, ids, vals, keys, weights)))
        loss = -np.mean(labels * np.log(p + 1e-12) + (1 - labels) * np.log(1 - p + 1e-12))
        print(f"test rows {len(labels)}  log-loss {loss:.5f}  AUC {auc(labels, p):.5f}  "
              f"accuracy {np.mean((p > 0.5) == (labels > 0.5)):.5f}", flush=True)
    node.finalize()


if __name__ == "__main__":
    main()
