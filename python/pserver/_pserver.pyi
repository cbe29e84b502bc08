"""Type stubs of pserver's C++ extension (python/src/pserver_module.cc); see docs/python.md."""

from typing import Callable, Mapping, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

Keys = npt.NDArray[np.uint64]
Callback = Callable[[Optional[BaseException]], object]


class Table:
    """A declared table; returned by Node.declare_table and named by requests."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def dtype(self) -> np.dtype: ...
    @property
    def width(self) -> int: ...


class Node:
    """This process's node of a pserver job (a worker, for Python)."""

    @staticmethod
    def start(*, register_timeout: Optional[float] = None) -> "Node":
        """Starts this node from the environment of `pserver launch` or `pserver node`; blocks until
        the whole cluster registered."""
    @property
    def role(self) -> str: ...
    @property
    def rank(self) -> int: ...
    @property
    def num_servers(self) -> int: ...
    @property
    def num_workers(self) -> int: ...
    @property
    def metrics_address(self) -> str:
        """'HOST:PORT' where this node serves its Prometheus metrics; '' without (docs/metrics.md)."""
    def declare_table(self, name: str, *, dtype: npt.DTypeLike = np.float32, width: int = 1,
                      updater: str = "add", params: Mapping[str, float] = ..., init: str = "zero",
                      init_scale: float = 0.0, init_seed: int = 0, storage: str = "sparse",
                      key_range: Optional[Tuple[int, int]] = None, filters: str = "",
                      checkpointed: bool = True, timeout: Optional[float] = None) -> Table:
        """Declares a table by name; every worker declaring the same name and spec gets the same one."""
    def barrier(self, group: str = "workers", *, timeout: Optional[float] = None) -> None:
        """Blocks until every node of group ('workers', 'servers', 'all') called it."""
    def finalize(self, *, timeout: Optional[float] = None) -> None:
        """Reports this worker done and waits for the end of the job; raises if the job failed."""
    def finalize_with_error(self, why: str) -> None:
        """Ends the whole job with an error naming this worker and why."""
    def close(self) -> None:
        """Leaves the job at once; later calls raise AbortedError."""
    def __enter__(self) -> "Node": ...
    def __exit__(self, *args: object) -> None: ...


class KVWorker:
    """Pushes and pulls of a worker node's tables; every call returns a timestamp at once."""

    def __init__(self, node: Node) -> None: ...
    def push(self, table: Table, keys: Keys, values: npt.NDArray, *, callback: Optional[Callback] = None,
             after: Sequence[int] = ..., max_delay: Optional[int] = None) -> int:
        """Adds values (the table's dtype, shape (n,) or (n, width)) to the sorted unique keys."""
    def pull(self, table: Table, keys: Keys, out: Optional[npt.NDArray] = None, *,
             callback: Optional[Callback] = None, after: Sequence[int] = ...,
             max_delay: Optional[int] = None) -> Tuple[int, npt.NDArray]:
        """Fetches the keys' values into out (or a new array); read it after wait(timestamp)."""
    def push_pull(self, table: Table, keys: Keys, values: npt.NDArray, out: Optional[npt.NDArray] = None, *,
                  callback: Optional[Callback] = None, after: Sequence[int] = ...,
                  max_delay: Optional[int] = None) -> Tuple[int, npt.NDArray]:
        """Push, then pull the values after it, in one round trip."""
    def wait(self, ts: int, timeout: Optional[float] = None) -> None:
        """Blocks until request ts completed; raises its error."""
    def set_max_delay(self, table: Table, tau: int) -> None: ...
    def set_staleness(self, table: Table, staleness: int) -> None: ...
    def clock(self) -> int: ...
    @property
    def current_clock(self) -> int: ...
    def server_of(self, table: Table, key: int) -> int: ...
