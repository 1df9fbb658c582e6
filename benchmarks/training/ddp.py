"""DistributedDataParallel on the CPU: 2 gloo processes vs 1 process, same global batch.

``mri2mri-bench training-ddp --data COHORT --work DIR --json OUT`` trains the same
run twice (`mri2mri-train`, same seed, epochs, slices per epoch and global batch):
once in one process with T threads, once under ``torchrun --nproc_per_node 2`` with
T/2 threads each. It reports both loss curves, their largest relative difference
per epoch, and the wall time per epoch.

The curves are not bit-identical by design: batch-norm statistics are computed
per process over its half of the batch (no SyncBatchNorm on the CPU), and the
gradient all-reduce sums in another order. Everything else (data order, global
batch, learning rate, initial weights) is the same.
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path


def _train(command: list[str], out: Path, env: dict[str, str]) -> dict:
    """Run one training; a failed one raises CalledProcessError with its output."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    done.check_returncode()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    times = [float(r["seconds"]) for r in rows]
    return {"loss": [float(r["train_loss"]) for r in rows],
            "epoch_seconds": [b - a for a, b in zip([0.0, *times], times, strict=False)],
            "wall_seconds": seconds}


#: Largest relative difference of an epoch's training loss, 2 gloo processes vs 1, that
#: counts as agreement: batch-norm normalises each process's half of the batch with that
#: half's statistics (no SyncBatchNorm on the CPU), which moves the losses by a few 1e-3
#: over a few epochs (measured on the 2 mm demo cohort: up to 2.4e-3 in 3 epochs).
TOLERANCE = 5e-3


def compare(data: Path, work: Path, *, epochs: int = 3, slices_per_epoch: int = 96,
            batch_size: int = 8, threads: int = 2,
            progress: Callable[[str], None] | None = None,
            tolerance: float = TOLERANCE) -> dict:
    """Train in one process, then in two gloo processes; return both runs and the loss gap.

    ``agree`` in the result: every epoch's losses within `tolerance` (relative).

    `work` holds the slice cache and the three runs (warm-up, one, two); `progress`
    is told which run starts.
    """
    say = progress or (lambda _: None)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    common = ["--data", str(data), "--source", "T1w", "--target", "T2w",
              "--epochs", str(epochs), "--slices-per-epoch", str(slices_per_epoch),
              "--batch-size", str(batch_size), "--device", "cpu", "--workers", "0",
              "--cache", str(cache)]
    env = dict(os.environ)
    train = str(Path(sys.executable).parent / "mri2mri-train")
    say("building the slice cache (one short run)")
    # Build the cache first, so that neither timed run prepares subjects.
    _train([train, *common, "--out", str(work / "warm"), "--epochs", "1",
            "--slices-per-epoch", str(batch_size)], work / "warm", env)
    say(f"one process, {threads} threads")
    single = _train([train, *common, "--out", str(work / "one"), "--threads", str(threads)],
                    work / "one", env)
    half = max(1, threads // 2)
    say(f"two gloo processes, {half} thread{'s' if half > 1 else ''} each")
    env["OMP_NUM_THREADS"] = str(half)
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2", "-m", "mri2mri.train", *common,
                  "--out", str(work / "two"), "--threads", str(half)], work / "two", env)
    diff = [abs(a - b) / abs(a) for a, b in zip(single["loss"], ddp["loss"], strict=True)]
    settings = {"data": str(data), "work": str(work), "epochs": epochs,
                "slices_per_epoch": slices_per_epoch, "batch_size": batch_size,
                "threads": threads}
    return {"settings": settings, "one_process": single, "two_processes_gloo": ddp,
            "max_relative_loss_difference": max(diff), "relative_loss_difference": diff,
            "tolerance": tolerance, "agree": max(diff) <= tolerance}
