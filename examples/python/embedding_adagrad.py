"""An embedding table trained with AdaGrad on the servers: matrix factorisation, in Python.

    pserver launch --servers 2 --workers 2 -- python3 examples/python/embedding_adagrad.py

The data are synthetic and seeded: ratings r(u, i) = <a_u, b_i> + noise from hidden rank-4
factors of --users users and --items items. Every user and item has a row of 16 floats in one
table (keys: users 0..U-1, items from 2^32), declared with width=16, a uniform initializer and
the servers' "adagrad" rule. Each worker trains on its share of the ratings: per minibatch it
pulls the rows of the users and items the batch touches (arrays of shape (n, 16)), computes the
squared error's gradient with numpy, and pushes it; the servers keep each row's AdaGrad state.
After the last epoch worker 0 prints the held-out RMSE beside that of always predicting the mean.
"""

import argparse
import time

import numpy as np

import pserver

ITEM_BASE = np.uint64(1 << 32)
WIDTH = 16


def ratings(users, items, count, seed):
    """(user ids, item ids, ratings): the same on every worker for the same seed."""
    rng = np.random.default_rng(seed)
    a = rng.normal(0, 1, (users, 4))
    b = rng.normal(0, 1, (items, 4))
    u = rng.integers(0, users, count)
    i = rng.integers(0, items, count)
    return u, i, np.einsum("nk,nk->n", a[u], b[i]) + rng.normal(0, 0.1, count)


def rows_of(kv, table, u, i):
    """The rows of users u and items i, pulled in one request: (user rows, item rows, keys, index)."""
    keys, index = np.unique(np.concatenate([u.astype(np.uint64), i.astype(np.uint64) + ITEM_BASE]),
                            return_inverse=True)
    ts, rows = kv.pull(table, keys)
    kv.wait(ts)
    return rows[index[:len(u)]], rows[index[len(u):]], keys, index


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--items", type=int, default=1000)
    ap.add_argument("--ratings", type=int, default=200000)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    node = pserver.Node.start()
    kv = pserver.KVWorker(node)
    rank, workers = node.rank, node.num_workers
    emb = node.declare_table("embeddings", dtype=np.float32, width=WIDTH, updater="adagrad",
                             params={"lr": args.lr}, init="uniform", init_scale=0.1, init_seed=args.seed)

    u, i, r = ratings(args.users, args.items, args.ratings, args.seed)
    held_out = np.arange(len(r)) % 10 == 0  # every tenth rating is for testing
    train = np.flatnonzero(~held_out)
    mine = train[rank::workers]
    rng = np.random.default_rng(args.seed + 1 + rank)
    print(f"worker {rank}: {len(mine)} of {len(train)} training ratings, {args.users} users, {args.items} items, "
          f"rows of {WIDTH}", flush=True)

    start = time.time()
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(mine)
        sq, pending = 0.0, []
        for b in range(0, len(mine), args.batch):
            batch = mine[b:b + args.batch]
            ur, ir, keys, index = rows_of(kv, emb, u[batch], i[batch])
            err = np.einsum("nk,nk->n", ur, ir) - r[batch]
            sq += float(np.sum(err ** 2))
            # d (err^2 / 2) / d user row = err * item row, and the other way round; rows touched
            # by several ratings of the batch add up.
            grad = np.zeros((len(keys), WIDTH), dtype=np.float32)
            np.add.at(grad, index[:len(batch)], err[:, None] * ir)
            np.add.at(grad, index[len(batch):], err[:, None] * ur)
            pending.append(kv.push(emb, keys, grad))
        for ts in pending:
            kv.wait(ts)
        print(f"worker {rank}: epoch {epoch}  train RMSE {np.sqrt(sq / len(mine)):.4f}  {time.time() - start:.1f}s",
              flush=True)
    node.barrier()

    if rank == 0:
        test = np.flatnonzero(held_out)
        ur, ir, _, _ = rows_of(kv, emb, u[test], i[test])
        rmse = np.sqrt(np.mean((np.einsum("nk,nk->n", ur, ir) - r[test]) ** 2))
        baseline = np.sqrt(np.mean((r[train].mean() - r[test]) ** 2))
        print(f"test ratings {len(test)}  RMSE {rmse:.4f}  (predicting the mean: {baseline:.4f})", flush=True)
    node.finalize()


if __name__ == "__main__":
    main()
