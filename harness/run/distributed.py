"""Data-parallel evaluation: all the distribution logic of ``harness run``, in one place.

Under a launcher (``torchrun``, ``accelerate launch``, Slurm's ``srun`` with torchrun; they set
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) every process plans the same run. Rank 0 alone opens the
run's row (created or resumed; it owns the run and keeps its heartbeat) and sends the run id and the
pending positions to the others; each process computes ``pending[rank::world]`` and writes its rows
into the same run. Rows are keyed by position and every method answers a sample the same way in any
batch (tested), so the stored run is the same whatever the number of processes or the batch size. After
a barrier rank 0 scores the run once. A process that dies leaves its rows missing: the same command,
with any number of processes, resumes and computes only those.

Without a shared database (one SQLite file per node), ``--shard I/N`` takes the I-th of N fixed
shares of the planned positions; such a run is stored as "partial" until ``harness merge`` unions the
shards' databases (it scores the run once complete).

The process group is gloo (CPU tensors only: what is exchanged is a few integers), so the same code
runs on CPUs, on GPUs and across nodes; each process evaluates on ``cuda:LOCAL_RANK`` when CUDA is there.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

log = logging.getLogger("harness")

# A share may take much longer than another (a slow sample, a resume that left one rank more to do):
# the final barrier waits this long before failing (seconds; $HARNESS_DIST_TIMEOUT_S).
DEFAULT_TIMEOUT_S = 24 * 3600


@dataclass(frozen=True)
class World:
    """This process's place in the launch: rank 0 of 1 when no launcher started it."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj``, on every process."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def device(self, requested: str) -> str:
        """``auto`` becomes this process's own GPU under a multi-process launch (one model per GPU)."""
        if requested != "auto" or self.size == 1:
            return requested
        import torch

        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"${name}={value!r} is not an integer; unset it or launch with torchrun / accelerate launch")


def world() -> World:
    """The launch this process is part of; joins its process group (gloo) the first time."""
    size = _env_int("WORLD_SIZE", 1)
    if size <= 1:
        return World()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < size:
        raise ValueError(f"$RANK={rank} is outside 0..{size - 1} ($WORLD_SIZE={size})")
    import torch.distributed as dist

    if not dist.is_initialized():
        if not os.environ.get("MASTER_ADDR"):
            raise ValueError("$WORLD_SIZE is set but $MASTER_ADDR is not: start the processes with torchrun, "
                             "accelerate launch or `harness run --processes N`")
        timeout = timedelta(seconds=_env_int("HARNESS_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S))
        dist.init_process_group("gloo", rank=rank, world_size=size, timeout=timeout)
    return World(rank=rank, size=size, local_rank=local_rank)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` (0 <= I < N) → (I, N)."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. --shard 0/2 (the first of two shares)") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: I must be in 0..N-1 and N at least 1, e.g. --shard 0/2 and --shard 1/2")
    return index, count


def shard_positions(planned: list[int], shard: tuple[int, int] | None) -> list[int]:
    """The shard's fixed share of the planned positions (by order in the plan, so resumes agree)."""
    if shard is None:
        return list(planned)
    index, count = shard
    return planned[index::count]


def share(pending: list[int], w: World) -> list[int]:
    """This process's share of the pending positions: every ``size``-th, from its rank."""
    return pending[w.rank::w.size]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(processes: int, argv: list[str]) -> int:
    """``harness run --processes N ...``: the same command as N processes on this machine, each with the
    environment torchrun would give it (rank, world size, a rendezvous on 127.0.0.1). Our own launcher,
    not torchrun's, so that a stop is one line per process and no launcher traceback: SIGTERM or Ctrl-C
    here is passed to every process (each marks what it stored), and when one fails the others are
    stopped. Returns the first failing exit status, else 0."""
    import signal
    import subprocess
    import sys
    import time

    if processes < 1:
        raise ValueError(f"--processes must be at least 1, got {processes}")
    base = {**os.environ, "WORLD_SIZE": str(processes), "LOCAL_WORLD_SIZE": str(processes),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    # On a CPU the cores are shared out (torchrun would give each process one thread).
    base.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes)))
    children = [subprocess.Popen([sys.executable, "-m", "harness.cli", *argv],
                                 env={**base, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(processes)]

    def stop() -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            child.wait()

    try:
        while True:
            codes = [child.poll() for child in children]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                stop()
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop()
        raise
