"""Benchmark models: one set of weights, as PyTorch module and as the shipped ONNX file.

Without a trained checkpoint the U-Net of a preset is built with a fixed seed and
its batch-norm statistics are calibrated on a few synthetic slices (a trained
model's folded normalisation is not the identity, so neither is ours). The ONNX
file is made by `mri2mri.export.onnx_export.export_checkpoint`, the command users
run, so the benchmark times exactly what ships, parity check (1e-4) included.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.train.checkpoint import save_checkpoint
from mri2mri.train.inference import model_from_checkpoint
from mri2mri.train.model import UNet, build_model, get_preset

#: Slice side used for every preset: the reference U-Net's native 256x256.
SLICE_SIZE = 256
PRESETS = ("reference", "small")


@dataclass
class BenchModel:
    """A preset's weights in both engines."""

    preset: str
    torch_model: UNet
    onnx_path: Path
    checkpoint: Path
    metadata: ModelMetadata


def synthetic_slices(n: int, size: int = SLICE_SIZE, channels: int = 1, seed: int = 0
                     ) -> np.ndarray:
    """Head-like slices in [-1, 1]: a smooth bright disc with texture on a -1 background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:size * 1j, -1:1:size * 1j]
    out = np.full((n, channels, size, size), -1.0, np.float32)
    for i in range(n):
        r = 0.6 + 0.2 * rng.random()
        inside = (xx / r) ** 2 + (yy / (r * 1.2)) ** 2 < 1
        texture = 0.3 * np.sin(8 * xx + rng.random() * 6) * np.cos(6 * yy) + 0.1 * rng.random(
            (size, size))
        out[i] = np.where(inside, 0.2 + texture, -1.0).astype(np.float32)
    return np.clip(out, -1, 1)


def _calibrate_batchnorm(model: UNet, slices: np.ndarray) -> None:
    """Give batch-norm real running statistics (cumulative average over `slices`)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for start in range(0, len(slices), 4):
            model(torch.from_numpy(slices[start:start + 4]))
    model.eval()


def seeded_checkpoint(preset: str, out: Path, seed: int = 0, in_channels: int = 1) -> Path:
    """Write an mri2mri checkpoint of a seeded, BN-calibrated U-Net (what export reads)."""
    spec = get_preset(preset, in_channels)
    torch.manual_seed(seed)
    model = build_model(spec.unet)
    calibration = synthetic_slices(8, channels=in_channels, seed=seed)
    _calibrate_batchnorm(model, calibration)
    sources = ["T1w", "T2w", "PDw"][:in_channels]
    meta = ModelMetadata(sources=sources, target="T2w" if "T2w" not in sources else "PDw",
                         pad_multiple=spec.geometry.multiple, min_size=spec.geometry.min_size,
                         preset=preset,
                         architecture={"name": "unet-pix2pix", **spec.unet.to_dict()},
                         training={"benchmark": f"seeded weights (seed {seed}), not trained"})
    state = {"metadata": meta.to_json(), "model_config": spec.unet.to_dict(),
             "model_state": {k: v.detach().clone() for k, v in model.state_dict().items()},
             "parity_slices": torch.from_numpy(synthetic_slices(2, channels=in_channels,
                                                                seed=seed + 1))}
    return save_checkpoint(state, out)


def prepare_model(preset: str, workdir: Path, checkpoint: Path | None = None, seed: int = 0
                  ) -> BenchModel:
    """Both engines' copies of `checkpoint` (or of a seeded `preset` U-Net) under `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    if checkpoint is None:
        checkpoint = seeded_checkpoint(preset, workdir / f"{preset}-seed{seed}.pt", seed)
    onnx_path = workdir / f"{checkpoint.stem}.onnx"
    if not onnx_path.exists():
        export_checkpoint(checkpoint, onnx_path)
    model, meta = model_from_checkpoint(checkpoint)
    return BenchModel(meta.preset if checkpoint else preset, model, onnx_path, checkpoint, meta)
