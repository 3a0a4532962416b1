"""Reading on a Dask cluster: pictures shared out to the workers of many machines, results in input order.

Needs `pip install 'digitrec[cluster]'` here and on every worker (digitrec and Dask's distributed
scheduler). The workers open the pictures by the names given here, so they must see the same paths
(a shared filesystem, or the same folder copied to each machine); each loads the model once.

    $ dask scheduler                                    # on one machine: tcp://10.0.0.5:8786
    $ dask worker tcp://10.0.0.5:8786 --nthreads 1      # on each machine, one per core
    $ digitrec predict /shared/scans --cluster tcp://10.0.0.5:8786 > readings.jsonl

or from Python:

    >>> from dask.distributed import Client
    >>> from digitrec.cluster import read_on_cluster
    >>> for record in read_on_cluster(Client("tcp://10.0.0.5:8786"), ["/shared/scans"]):
    ...     print(record["file"], record.get("text"))
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Iterable, Iterator

from digitrec import batch
from digitrec.batch import CHUNK, ReadOptions, Task
from digitrec.errors import UsageError

WINDOW_PER_THREAD = 4  # chunks in flight per worker thread: keeps the cluster busy, memory bounded
CONNECT_TIMEOUT_S = 20  # how long to try to reach the scheduler before saying it cannot be reached

_setup = threading.Lock()


def _read_chunk_on_worker(tasks: list[Task], options: ReadOptions) -> list[dict]:
    """Runs on a Dask worker: its model is loaded by the first chunk and kept for the next ones."""
    with _setup:
        if batch._reader is None or batch._reader[1] != options:
            batch._start_worker(options, worker=False)
    return [batch.read_picture(t).record for t in tasks]


def connect(address):
    """A dask.distributed Client for ADDRESS (or the Client given), with one clear error where that fails."""
    try:
        from dask.distributed import Client
    except ImportError:
        raise UsageError("--cluster needs Dask's distributed scheduler: pip install 'digitrec[cluster]'") from None
    if isinstance(address, Client):
        return address
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as e:
        raise UsageError(f"--cluster {address}: cannot reach a Dask scheduler there ({e})") from None


def read_on_cluster(address, inputs: Iterable[str], model: str | None = None, backend: str = "auto",
                    top_k: int = 3) -> Iterator[dict]:
    """The `digitrec predict --json` record of every picture in `inputs`, in input order, read on a cluster.

    `address` is the scheduler's address (tcp://HOST:8786) or a dask.distributed Client.
    """
    client = connect(address)
    options = ReadOptions(model=model, backend=backend, top_k=top_k)
    tasks = batch.tasks_from(inputs)
    threads = max(1, sum(client.nthreads().values()))
    pending: deque = deque()
    try:
        for start in range(0, len(tasks), CHUNK):
            chunk = tasks[start:start + CHUNK]
            pending.append(client.submit(_read_chunk_on_worker, chunk, options, pure=False))
            if len(pending) >= threads * WINDOW_PER_THREAD:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        if client is not address:
            client.close()
