"""Training in several processes, on one machine or many: torchrun's environment, the process group,
and `digitrec train --nproc N`, which hands over to torch's own launcher.

    $ torchrun --nproc_per_node 2 -m digitrec train --model fast     # the same as:
    $ digitrec train --model fast --nproc 2

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; they are read here once (`PROCESSES`). Rank 0 is the
master process: it alone reads and writes the run folder and prints; the other ranks get what they
need from it through the process group. Torch is imported inside the functions, so the command's
`--help` stays instant.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass

from digitrec.errors import UsageError

LAUNCH_MONITOR_S = 0.2  # how often the launcher looks for a process that died
STOP_GRACE_S = 20  # how long the launcher waits for the other processes to stop before killing them
GROUP_TIMEOUT_MIN = 10  # a collective that waits longer than this for a silent rank gives up


@dataclass(frozen=True)
class Processes:
    rank: int = 0  # this process's number among all of them; 0 is the master
    local_rank: int = 0  # its number on this machine: the GPU it takes
    world_size: int = 1  # processes in the training, all machines together

    @property
    def master(self) -> bool:
        return self.rank == 0


def _from_env() -> Processes:
    try:
        procs = Processes(*(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1))))
    except ValueError:
        return Processes()  # not set by a launcher: one process
    return procs if 0 <= procs.rank < procs.world_size else Processes()


PROCESSES = _from_env()
LAUNCHER_ENV = "DIGITREC_NPROC"  # set by `--nproc`'s launcher, which itself reports a stop or a lost process
LAUNCHED = os.environ.get(LAUNCHER_ENV) == "1"
EXIT_PEER_LOST = 3  # under the launcher: this process found another one gone, and leaves the report to it


def quiet(e: BaseException) -> BaseException:
    """Mark an error that every rank meets (a bad option) so that only the master prints it."""
    e.quiet = not PROCESSES.master
    return e


def start(procs: Processes) -> None:
    """Join the process group: gloo for CPU tensors, NCCL for CUDA ones where torch has CUDA."""
    if procs.world_size == 1:
        return
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(procs.local_rank)
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=GROUP_TIMEOUT_MIN))


def barrier(procs: Processes) -> None:
    """Wait until every rank is here: the others stay until the master has written the last files."""
    if procs.world_size > 1:
        import torch.distributed as dist

        dist.barrier()


def stop(procs: Processes) -> None:
    if procs.world_size > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def broadcast(procs: Processes, obj):
    """The master's `obj` on every rank (a small picklable thing: a config, an error, a state dict)."""
    if procs.world_size == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def total(procs: Processes, values: list[float]) -> list[float]:
    """The sums of `values` over all ranks."""
    if procs.world_size == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def wrap(procs: Processes, model, device):
    """The model as DistributedDataParallel: gradients averaged over ranks.

    Batch norm's running statistics are rank 0's: only rank 0 evaluates and saves the model, and in
    training batch norm uses each batch's own statistics, so copying them to the other ranks before
    every step (DDP's default) would only add a wait per step (about 15% of `fast`'s time on 2 cores).
    """
    if procs.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   forward_sync_buffers=False, gradient_as_bucket_view=True)


def peer_lost(procs: Processes, out, e: Exception) -> UsageError:
    """The error a rank raises when a collective fails because another rank stopped."""
    import re

    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    first = re.sub(r"\[[^\]]*\]:?\s*", "", first).strip()  # gloo's source locations and bracketed addresses
    error = UsageError(f"another of the {procs.world_size} training processes stopped ({first[:100]}); "
                       f"the last complete epoch is kept: digitrec train --resume {out}")
    error.quiet = LAUNCHED or not procs.master
    if LAUNCHED:
        error.status = EXIT_PEER_LOST
    return error


def launch(nproc: int, argv: list[str], threads: int | None, out: str) -> int:
    """Run `digitrec <argv>` in `nproc` processes on this machine through torch's launcher; the exit status.

    Each process gets `threads` CPU threads (default: the cores shared out). Exit status: 0; 2 for bad
    input (the master printed why); 130 when interrupted; 2 where a process died or failed, with one
    line saying which. Those two lines are printed here, not by the processes.
    """
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    # The launcher's own warnings (one per process it stops) would bury the one line that matters.
    for name in [n for n in logging.root.manager.loggerDict if n.startswith("torch.distributed.elastic")]:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    os.environ["OMP_NUM_THREADS"] = str(threads or max(1, (os.cpu_count() or 1) // nproc))
    os.environ[LAUNCHER_ENV] = "1"
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
                          monitor_interval=LAUNCH_MONITOR_S, shutdown_timeout=STOP_GRACE_S)
    # The processes leave the reporting of a stop to this one: which of them notices first is a race.
    interrupted = f"digitrec train: interrupted; the last complete epoch is kept: digitrec train --resume {out}"
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "digitrec", *argv)
    except SignalException:  # Ctrl-C or SIGTERM: the processes got it too
        print(f"\n{interrupted}", file=sys.stderr)
        return 130
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        if 2 in codes.values():
            return 2  # bad input: the master said what
        # Stopped by the launcher after another failed (SIGTERM, or our handler's 130), or found it gone.
        consequences = (-signal.SIGTERM, 130, EXIT_PEER_LOST)
        causes = {rank: code for rank, code in codes.items() if code not in consequences}
        if not causes:  # a process was sent a stop signal
            print(interrupted, file=sys.stderr)
            return 130
        rank, code = min(causes.items())
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        print(f"digitrec train: error: process {rank} of {nproc} stopped ({how}), and so did the others; "
              f"the last complete epoch is kept: digitrec train --resume {out}", file=sys.stderr)
        return 2
    return 0
