"""pserver: a parameter server for distributed machine learning -- the worker's side, in Python.

A worker program, started by ``pserver launch --servers 2 --workers 4 -- python3 worker.py``::

    import numpy as np
    import pserver

    node = pserver.Node.start()                    # from the launcher's environment
    w = node.declare_table("w", dtype=np.float32, updater="sgd", params={"lr": 0.1})
    kv = pserver.KVWorker(node)
    keys = np.array([3, 17, 99], dtype=np.uint64)  # sorted, unique
    kv.wait(kv.push(w, keys, np.ones(3, dtype=np.float32)))
    ts, values = kv.pull(w, keys)
    kv.wait(ts)                                    # values is filled now
    node.finalize()

Calls that block release the GIL; errors raise the exceptions of ``pserver`` (``Error`` and its
subclasses, which are also ``ValueError``, ``TimeoutError``, ...). See docs/python.md.
"""

from ._errors import (AbortedError, CorruptionError, DeadlineExceededError, Error, InvalidArgumentError,
                      NotFoundError, UnavailableError)
from ._pserver import KVWorker, Node, Table

__all__ = [
    "AbortedError", "CorruptionError", "DeadlineExceededError", "Error", "InvalidArgumentError", "KVWorker",
    "Node", "NotFoundError", "Table", "UnavailableError",
]
