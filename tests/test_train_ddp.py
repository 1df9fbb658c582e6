"""torchrun with 2 CPU processes (gloo): trains, rank 0 alone writes, resumes, exports, runs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_train_cohort import tiny_cohort_dir

from mri2mri.data.cohort import Cohort
from mri2mri.train.checkpoint import load_checkpoint

RUN_FILES = {"best.pt", "last.pt", "metrics.csv", "loss.png", "config.json", "cache"}


def _script(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "mri2mri.train", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_torchrun_trains_resumes_and_exports(tmp_path_factory, tmp_path):
    data = tiny_cohort_dir(tmp_path_factory)
    out = tmp_path / "ddp"
    args = ["--data", str(data), "--source", "T1w", "--target", "T2w", "--out", str(out),
            "--slices-per-epoch", "8", "--batch-size", "4", "--threads", "1",
            "--device", "cpu", "--workers", "0"]
    first = _torchrun([*args, "--epochs", "1"])
    assert first.returncode == 0, first.stdout + first.stderr
    assert {p.name for p in out.iterdir()} == RUN_FILES  # rank 0 alone wrote: no stray files
    assert first.stdout.count("best epoch 1") == 1  # one report, from rank 0
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 4

    resumed = _torchrun([*args, "--resume", "--epochs", "2"])
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "0 prepared now" in resumed.stderr  # the cache is reused
    state = load_checkpoint(out / "last.pt")
    assert state["epoch"] == 1 and len(state["rng_ranks"]) == 2
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["full_val_psnr"]

    model = tmp_path / "model.onnx"
    export = subprocess.run([_script("mri2mri-export"), str(out / "best.pt"),
                             "--out", str(model)], capture_output=True, text=True)
    assert export.returncode == 0, export.stdout + export.stderr
    subject = Cohort.discover(data).subject(state["split"]["test"][0])
    synthesized = tmp_path / "t2.nii.gz"
    run = subprocess.run([_script("mri2mri-run"), "--model", str(model),
                          "--input", str(subject.path("T1w")), "--output", str(synthesized),
                          "--device", "cpu"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    image = nib.load(synthesized)
    assert image.shape == nib.load(subject.path("T1w")).shape
    assert np.isfinite(np.asarray(image.dataobj)).all()


# Builds DDP as the trainer does (which imports torch._dynamo, after the group exists) and
# counts this process's threads (Linux): none of gloo's may outlive `shutdown`.
_TEARDOWN = """
import os
import sys
from pathlib import Path

import torch
from mri2mri.train import distributed

def threads():
    return len(os.listdir("/proc/self/task"))

ctx = distributed.from_environment()
before = threads()
distributed.init(ctx, torch.device("cpu"))
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
model(torch.ones(2, 4)).sum().backward()
del model
distributed.shutdown(ctx)
Path(sys.argv[1], f"rank{ctx.rank}").write_text(f"{before} {threads()}")
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_shutdown_frees_the_gloo_group(tmp_path):
    """`distributed.shutdown` joins gloo's worker threads. A group kept alive past it (as
    torch.distributed.nn.functional's ``group=group.WORLD`` defaults did, imported by DDP after
    the group existed) ran them into the interpreter's exit, where a worker dropping a tensor
    made in Python aborted the process: ``terminate called without an active exception``."""
    script = tmp_path / "teardown.py"
    script.write_text(_TEARDOWN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", str(script), str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # Each rank's thread count before the group and after shutdown.
    counts = {rank: (tmp_path / f"rank{rank}").read_text().split() for rank in (0, 1)}
    assert all(before == after for before, after in counts.values()), counts
