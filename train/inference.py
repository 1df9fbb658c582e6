"""PyTorch inference on whole volumes through the runtime's preprocess/restore path.

`synthesize_with_checkpoint` is the reference the ONNX runtime is compared with:
same preparation, same restoration, only the network engine differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch

from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.imaging.preprocess import prepare_sources, restore_image
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.metadata import ModelMetadata

from .checkpoint import Checkpoint, as_checkpoint, read_checkpoint
from .model import UNet, build_model


def model_from_checkpoint(checkpoint: str | Path | Checkpoint | dict[str, Any]
                          ) -> tuple[UNet, ModelMetadata]:
    """The generator in eval mode (batch-norm uses running statistics), and its metadata."""
    loaded = isinstance(checkpoint, Checkpoint | dict)
    source = "checkpoint" if loaded else checkpoint
    state = as_checkpoint(checkpoint, source) if loaded else read_checkpoint(checkpoint)
    model = build_model(state.model_config)
    try:
        model.load_state_dict(state.model_state)
    except RuntimeError as exc:
        raise InputError(source, f"model weights do not match the stored architecture "
                                 f"({exception_summary(exc)})") from None
    return model.eval(), state.model_metadata(source)


@torch.no_grad()
def predict_slices(model: UNet, slices: np.ndarray, batch_size: int = 16,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """(Z, C, H, W) network input -> (Z, 1, H, W) network output, float32.

    With a 2.5D model, C counts the context channels: pass `stack_context(slices, K)`.
    """
    model = model.to(device).eval()
    out = []
    for start in range(0, len(slices), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(slices[start:start + batch_size]))
        out.append(model(batch.to(device)).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 1) + slices.shape[2:], np.float32)


def synthesize_with_checkpoint(checkpoint: str | Path | Checkpoint | dict[str, Any],
                               images: Sequence[nib.Nifti1Image], *,
                               resample_to_first: bool = False, batch_size: int = 16,
                               device: str = "cpu") -> nib.Nifti1Image:
    """Synthesize the target contrast from source images given in the model's channel order."""
    model, meta = model_from_checkpoint(checkpoint)
    if len(images) != len(meta.sources):
        raise InputError(None, f"model {meta.task} needs {len(meta.sources)} input image(s), "
                               f"got {len(images)}")
    prepared = prepare_sources(images, meta.geometry, meta.normalisation, names=meta.sources,
                               resample_to_first=resample_to_first)
    pred = predict_slices(model, stack_context(prepared.slices, meta.context), batch_size, device)
    return restore_image(pred, prepared, meta.normalisation.target_scale,
                         description=f"mri2mri {meta.task}")
