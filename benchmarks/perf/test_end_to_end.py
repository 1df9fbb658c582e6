"""End to end: `mri2mri-run` on a 256x256x150 volume, with the time of each stage.

On the CPU, and with `--device cuda` and `tensorrt` where a GPU works (skipped,
with the runtime's reason, elsewhere).

The whole command is timed as a user runs it (process start, imports and model
load included); its ``--verbose`` line gives the in-process breakdown (load,
preprocess, inference, postprocess, write) that RESULTS.md tabulates.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.benchmarks.throughput.engines import gpu_skip_reason
from mri2mri.benchmarks.throughput.models import PRESETS
from mri2mri.runtime.engine.providers import CUDA, TENSORRT

SHAPE = (256, 256, 150)
STAGES = ("load", "preprocess", "engine", "inference", "postprocess", "write", "total")


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 mm head-like T1w volume, 256x256x150."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n, dtype=np.float32) for n in SHAPE],
                       indexing="ij")
    inside = (grid[0] / 0.75) ** 2 + (grid[1] / 0.85) ** 2 + (grid[2] / 0.9) ** 2 < 1
    data = np.where(inside, 600 + 200 * grid[0] + rng.normal(0, 20, SHAPE), 0)
    path = tmp_path_factory.mktemp("e2e") / "sub-01_T1w.nii.gz"
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.eye(4)), path)
    return path


def _stages(stdout: str) -> dict[str, float]:
    line = next(line for line in stdout.splitlines() if line.startswith("timings:"))
    return {k: float(v) for k, v in re.findall(r"(\w+) ([0-9.]+) s", line)}


@pytest.mark.parametrize("device", ["cpu", "cuda", "tensorrt"])
@pytest.mark.parametrize("preset", PRESETS)
def test_mri2mri_run(benchmark, bench_models, bench_workdir: Path, volume: Path,
                     tmp_path: Path, preset: str, device: str) -> None:
    """The command as a user runs it; on TensorRT a first, untimed run builds the engine."""
    model = bench_models(preset)
    if device != "cpu":
        reason = gpu_skip_reason(CUDA if device == "cuda" else TENSORRT, model.onnx_path)
        if reason is not None:
            pytest.skip(f"mri2mri-run: {reason}")
    exe = shutil.which("mri2mri-run")
    assert exe, "mri2mri-run is not installed (pip install -e .)"
    output = tmp_path / "out.nii.gz"
    command = [exe, "--model", str(model.onnx_path), "--input", f"T1w={volume}",
               "--output", str(output), "--device", device, "--overwrite", "--verbose"]
    env = {**os.environ, "XDG_CACHE_HOME": str(bench_workdir / "xdg-cache")}
    results: list[str] = []

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        results.append(done.stdout)

    benchmark.pedantic(run, rounds=1, iterations=1,
                       warmup_rounds=1 if device == "tensorrt" else 0)
    stages = _stages(results[-1])
    assert set(STAGES) <= set(stages), results[-1]
    assert f"provider {'TensorRT' if device == 'tensorrt' else device.upper()}" in results[-1]
    out = nib.load(output)
    assert out.shape == SHAPE and np.allclose(out.affine, nib.load(volume).affine)
    benchmark.group = "end to end"
    benchmark.extra_info.update({"preset": preset, "device": device, "shape": list(SHAPE),
                                 "stages": stages})
