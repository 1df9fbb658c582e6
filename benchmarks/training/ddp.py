"""DistributedDataParallel on the CPU: 2 gloo processes vs 1 process, same global batch.

``python -m mri2mri.benchmarks.training.ddp --data COHORT --work DIR --json OUT``
trains the same run twice (`mri2mri-train`, same seed, epochs, slices per epoch
and global batch): once in one process with T threads, once under
``torchrun --nproc_per_node 2`` with T/2 threads each. It reports both loss
curves, their largest relative difference per epoch, and the wall time per epoch.

The curves are not bit-identical by design: batch-norm statistics are computed
per process over its half of the batch (no SyncBatchNorm on the CPU), and the
gradient all-reduce sums in another order. Everything else (data order, global
batch, learning rate, initial weights) is the same.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from mri2mri.runtime.atomic import write_json


def _train(command: list[str], out: Path, env: dict[str, str]) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(done.stdout + done.stderr)
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    times = [float(r["seconds"]) for r in rows]
    return {"loss": [float(r["train_loss"]) for r in rows],
            "epoch_seconds": [b - a for a, b in zip([0.0, *times], times, strict=False)],
            "wall_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--slices-per-epoch", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cache = args.work / "cache"
    common = ["--data", str(args.data), "--source", "T1w", "--target", "T2w",
              "--epochs", str(args.epochs), "--slices-per-epoch", str(args.slices_per_epoch),
              "--batch-size", str(args.batch_size), "--device", "cpu", "--workers", "0",
              "--cache", str(cache)]
    env = dict(os.environ)
    train = str(Path(sys.executable).parent / "mri2mri-train")
    # Build the cache first, so that neither timed run prepares subjects.
    _train([train, *common, "--out", str(args.work / "warm"), "--epochs", "1",
            "--slices-per-epoch", str(args.batch_size)], args.work / "warm", env)
    single = _train([train, *common, "--out", str(args.work / "one"),
                     "--threads", str(args.threads)], args.work / "one", env)
    env["OMP_NUM_THREADS"] = str(max(1, args.threads // 2))
    ddp = _train([sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node", "2", "-m", "mri2mri.train", *common,
                  "--out", str(args.work / "two"), "--threads", str(max(1, args.threads // 2))],
                 args.work / "two", env)
    diff = [abs(a - b) / abs(a) for a, b in zip(single["loss"], ddp["loss"], strict=True)]
    result = {"settings": vars(args) | {"data": str(args.data), "work": str(args.work),
                                        "json": str(args.json)},
              "one_process": single, "two_processes_gloo": ddp,
              "max_relative_loss_difference": max(diff), "relative_loss_difference": diff}
    write_json(args.json, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
