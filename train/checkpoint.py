"""Training checkpoints: everything needed to rebuild the model, its preprocessing, and the run.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, saved
with `torch.save` and read back with ``torch.load(weights_only=True)`` (no
arbitrary code runs on load). Keys:

- ``format`` / ``format_version``: marks an mri2mri checkpoint.
- ``metadata``: the `ModelMetadata` JSON shared with ONNX export and the runtime
  (task, contrasts, normalisation incl. ``target_scale``, slice geometry, preset,
  architecture, training provenance, package version).
- ``model_config``, ``model_state``: the U-Net.
- ``train_config``, ``split``, ``epoch``, ``history``, ``best``: the run so far.
- ``optimizer_state``, ``scheduler_state``, ``scaler_state``, ``rng``: to resume exactly.
- ``baseline``: the fitted look-up-table baseline.
- ``parity_slices``: a few real validation slices, so export can check ONNX against PyTorch.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.metadata import ModelMetadata

FORMAT = "mri2mri-checkpoint"
FORMAT_VERSION = 1
REQUIRED = ("metadata", "model_config", "model_state")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write a checkpoint atomically (a crash mid-write leaves the previous file intact)."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    with atomic_path(path, overwrite=True) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and validate a checkpoint; anything else is an `InputError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "checkpoint not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not a checkpoint (did you mean "
                               f"{path / 'best.pt'}?)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, OSError,
            ValueError, AttributeError, KeyError, IndexError, TypeError) as exc:
        raise InputError(path, f"not a readable PyTorch checkpoint ({exception_summary(exc)})"
                         ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise InputError(path, "not an mri2mri checkpoint (no mri2mri training state in it; "
                               "was it written by mri2mri-train?)")
    if state.get("format_version") != FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {state.get('format_version')} is not "
                               f"supported (this version reads {FORMAT_VERSION})")
    missing = [k for k in REQUIRED if k not in state]
    if missing:
        raise InputError(path, f"incomplete mri2mri checkpoint (missing {', '.join(missing)})")
    return state


def checkpoint_metadata(state: dict[str, Any], source: str | Path = "checkpoint"
                        ) -> ModelMetadata:
    """The model metadata stored in a loaded checkpoint."""
    return ModelMetadata.from_json(state["metadata"], str(source))
