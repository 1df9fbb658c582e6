"""Multi-process training under torchrun: who am I, and the few collectives the trainer uses.

``torchrun --nproc_per_node N mri2mri-train ...`` (or ``-m mri2mri.train``) sets
RANK / WORLD_SIZE / LOCAL_RANK; without them training runs in one process and
every helper here is a no-op. The backend is NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import datetime
import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

#: Collectives wait this long (the cache build on rank 0 or a full validation may be slow).
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in the run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def from_environment() -> Dist:
    """The torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK), or a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(ctx: Dist, device: torch.device) -> None:
    """Join the process group (once per process); NCCL for CUDA devices, gloo otherwise."""
    if ctx.enabled and not dist.is_initialized():
        # Imported before the group exists, on purpose: this module's collectives take
        # ``group=group.WORLD`` as a default argument, evaluated at import. Imported later
        # (torch._dynamo imports it, and DistributedDataParallel imports torch._dynamo),
        # those defaults would hold the default group for the life of the process, and
        # `shutdown` could not free it (see there).
        importlib.import_module("torch.distributed.nn.functional")

        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=TIMEOUT)


def shutdown(ctx: Dist) -> None:
    """Leave the process group, freeing it: on the CPU its gloo worker threads are joined here.

    Freed only if nothing else still holds the group (`init` sees to the one holder known).
    A gloo group that outlives this keeps its worker threads running into the interpreter's
    exit, and a worker that drops its last reference to a tensor made in Python after the
    interpreter began finalizing is killed taking the GIL: ``terminate called without an
    active exception``, SIGABRT, after the run has finished (on a loaded machine, where a
    worker can lag behind the main thread).
    """
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
