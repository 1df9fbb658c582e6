"""The data loader's overhead: training slices/s fed by the cache loader vs from memory.

``mri2mri-bench training-loader --data COHORT --cache DIR --json OUT [--device cuda]``
builds (or reuses) the slice cache of COHORT, then times the same optimizer steps
(same model, loss, batches) fed two ways, alternated to share the machine's load:

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

from mri2mri.runtime.metadata import Normalisation
from mri2mri.train.cache import CacheSpec, SliceCache
from mri2mri.train.cohort import Cohort
from mri2mri.train.dataset import CachedSlices, EpochSampler
from mri2mri.train.model import build_model, get_preset
from mri2mri.train.perceptual import PerceptualLoss
from mri2mri.train.trainer import _cpu_count, resolve_precision, resolve_workers


def _step_fn(preset_name: str, device: torch.device, amp: torch.dtype | None):
    preset = get_preset(preset_name, in_channels=1)
    torch.manual_seed(0)
    model = build_model(preset.unet).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.5, 0.999))
    perceptual = PerceptualLoss().to(device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)

    def step(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        source = source.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        if device.type == "cuda":
            source = source.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            output = model(source)
        loss = perceptual(output, target) + (output.float() - target).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.detach()

    return step, preset


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(data: Path, cache: Path, preset: str, device: torch.device, precision: str,
            batch: int, steps: int, workers: int | str, repeats: int) -> dict:
    amp = resolve_precision(precision, device)
    step, spec_preset = _step_fn(preset, device, amp)
    cohort = Cohort.discover(data)
    subjects = cohort.split("train")
    entries = SliceCache(cache, CacheSpec.of(["T1w"], "T2w", spec_preset.geometry,
                                             Normalisation())).ensure(subjects, jobs=2)
    dataset = CachedSlices(entries)
    sampler = EpochSampler(len(dataset), steps * batch, seed=0, batch_size=batch)
    n_workers = resolve_workers(workers, device, _cpu_count())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch, sampler=sampler, num_workers=n_workers,
        pin_memory=device.type == "cuda", persistent_workers=n_workers > 0,
        prefetch_factor=4 if n_workers > 0 else None)
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
    return {"preset": preset, "device": str(device), "precision": str(amp or "fp32"),
            "batch": batch, "steps": steps, "workers": n_workers, "repeats": repeats,
            "loader_slices_per_s": loader_rate, "memory_slices_per_s": memory_rate,
            "ratio": loader_rate / memory_rate, "all": rates}


def compare(data: Path, cache: Path, device: torch.device, batch: int = 8, steps: int = 20,
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
        row = measure(data, cache, preset, device, precision, batch, steps, workers, repeats)
        if progress is not None:
            progress(row)
        rows.append(row)
    return rows
