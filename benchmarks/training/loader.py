"""The data loader's overhead: training slices/s fed by the cache loader vs from memory.

``mri2mri-bench training-loader --data COHORT --cache DIR --json OUT [--device cuda]``
builds (or reuses) the slice cache of COHORT, then times the same optimizer steps
(the trainer's own `build_training` and `train_step`: same model, loss, batches) fed
two ways, alternated to share the machine's load:

- **loader**: `CachedSlices` + `EpochSampler` through a DataLoader with the
  trainer's settings (``--workers auto`` unless given, persistent workers, pinned
  memory and prefetch on CUDA);
- **memory**: the same batches, collected beforehand into tensors already on the
  host (pinned on CUDA), so only the copy to the device remains.

ratio = loader slices/s / memory slices/s (1.0: the loader costs nothing). On CUDA
it also reports both presets in fp32 and mixed precision. Results go to a JSON file.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.metadata import Normalisation
from mri2mri.train.cache import CacheSpec, SliceCache
from mri2mri.train.config import TrainConfig, available_cpus, resolve_workers
from mri2mri.train.dataset import CachedSlices, EpochSampler
from mri2mri.train.run_data import build_loader
from mri2mri.train.updates import build_training


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(data: Path, cache: Path, *, preset: str, device: torch.device, precision: str,
            batch: int, steps: int, workers: int | str, repeats: int) -> dict:
    config = TrainConfig(data=str(data), sources=["T1w"], target="T2w", out="", preset=preset,
                         precision=precision)
    # The trainer's own network (seed 0), optimizer, loss, precision and step.
    training = build_training(config, device)
    step = training.step
    cohort = Cohort.discover(data)
    subjects = cohort.split("train")
    spec = CacheSpec.of(config.sources, config.target, config.model_preset().geometry,
                        Normalisation())
    entries = SliceCache(cache, spec).ensure(subjects, jobs=2)
    dataset = CachedSlices(entries)
    sampler = EpochSampler(len(dataset), steps * batch, seed=0, batch_size=batch)
    n_workers = resolve_workers(workers, device, available_cpus())
    loader = build_loader(dataset, sampler, workers=n_workers, device=device, seed=0)
    in_memory = list(loader)
    if device.type == "cuda":
        in_memory = [(s.pin_memory(), t.pin_memory()) for s, t in in_memory]
    for source, target in in_memory[:2]:  # warm-up (cudnn autotuning, allocator)
        step(source, target)
    _sync(device)
    rates: dict[str, list[float]] = {"loader": [], "memory": []}
    for repeat in range(repeats):
        for name in ("loader", "memory") if repeat % 2 == 0 else ("memory", "loader"):
            sampler.set_epoch(repeat + 1)
            batches = loader if name == "loader" else in_memory
            _sync(device)
            started = time.perf_counter()
            for source, target in batches:
                step(source, target)
            _sync(device)
            rates[name].append(steps * batch / (time.perf_counter() - started))
    loader_rate = statistics.median(rates["loader"])
    memory_rate = statistics.median(rates["memory"])
    precision_used = str(training.amp_dtype or "fp32")
    return {"preset": preset, "device": str(device), "precision": precision_used,
            "batch": batch, "steps": steps, "workers": n_workers, "repeats": repeats,
            "loader_slices_per_s": loader_rate, "memory_slices_per_s": memory_rate,
            "ratio": loader_rate / memory_rate, "all": rates}


def compare(data: Path, cache: Path, device: torch.device, *, batch: int = 8, steps: int = 20,
            workers: int | str = "auto", repeats: int = 3,
            progress: Callable[[dict], None] | None = None) -> list[dict]:
    """`measure` for each configuration the device has: the small preset in fp32 on the
    CPU; on CUDA both presets in fp32 and mixed precision. `progress` gets each row."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        configs = [(p, prec) for p in ("small", "reference") for prec in ("fp32", "auto")]
    else:
        configs = [("small", "fp32")]
    rows = []
    for preset, precision in configs:
        row = measure(data, cache, preset=preset, device=device, precision=precision,
                      batch=batch, steps=steps, workers=workers, repeats=repeats)
        if progress is not None:
            progress(row)
        rows.append(row)
    return rows
