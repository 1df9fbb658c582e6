"""The feature check's reference, measured with the torch network.

`mri2mri.runtime.synthesis.features` defines the figure; the runtime reads the feature
maps from the ONNX model's second output, and this module from
`UNet.forward_with_features` (the same tensor, before export). Training records the
references of its best weights (`_Run.finish`, through `mri2mri.train.ood_reference`:
the feature, contrast and histogram-threshold records, from the cohort's files and
augmented draws); `ood_references_of_checkpoint` and `add_ood_references` make them after
the fact, from a checkpoint and its cohort's files, for checkpoints trained before the
current definitions (``mri2mri-export CHECKPOINT --ood-reference``).

Reference subjects: the run's own cohort subjects, training and validation. Not the
simulated prior's subjects (`mri2mri.train.prior`), although the network trained on
them: the check asks whether a scan is like the scans the model was made for, and the
prior's phantoms would widen the spread towards simulated images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import PreparedSources
from mri2mri.runtime.synthesis import contrast, features, ood
from mri2mri.runtime.synthesis.disagreement import checked_slices

from .checkpoint import Checkpoint, as_checkpoint, read_checkpoint, save_checkpoint
from .dataset import context_stacks
from .inference import model_from_checkpoint
from .model import UNet
from .ood_reference import DRAWS, cohort_subjects, references

#: The `ModelMetadata.ood` records `add_ood_references` replaces.
OOD_KEYS = (features.KEY, contrast.KEY, ood.KEY)


@torch.no_grad()
def feature_maps(model: UNet, stacks: np.ndarray, batch_size: int = 16,
                 device: str | torch.device = "cpu") -> np.ndarray:
    """(N, C, H, W) network inputs -> the bottleneck's (N, C', h, w) activations, float32."""
    model = model.to(device).eval()
    out = []
    for start in range(0, len(stacks), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(stacks[start:start + batch_size]))
        out.append(model.forward_with_features(batch.to(device))[1].float().cpu().numpy())
    if not out:
        raise ValueError("no slices to take feature maps of")
    return np.concatenate(out)


def prepared_vectors(model: UNet, prepared: PreparedSources, context: int, *,
                     batch_size: int = 16, device: str | torch.device = "cpu") -> np.ndarray:
    """A prepared subject's feature vectors (M, C'), on the runtime's checked slices."""
    mask, zs = checked_slices(prepared)
    if not len(zs):
        return np.zeros((0, 0))
    maps = feature_maps(model, context_stacks(prepared.slices, zs, context), batch_size, device)
    return features.measure(maps, mask[zs])


def ood_references_of_checkpoint(checkpoint: str | Path | Checkpoint | dict[str, Any],
                                 data: str | Path | None = None, *, batch_size: int = 16,
                                 device: str = "cpu", draws: int | None = None
                                 ) -> dict[str, Any]:
    """The feature, contrast and histogram references (`mri2mri.train.ood_reference`) of a
    checkpoint's weights, from its cohort's training and validation subjects (its split),
    prepared from their files as the runtime does.

    `data`: the cohort folder (default: the one the run was trained on, from its config).
    """
    loaded = isinstance(checkpoint, Checkpoint | dict)
    source = None if loaded else checkpoint
    state = as_checkpoint(checkpoint, source) if loaded else read_checkpoint(checkpoint)
    run = state.run
    data = data if data is not None else run.train_config.get("data") if run else None
    split = run.split if run else {}
    if not data or not split:
        raise InputError(source, "the checkpoint records no cohort or split to make a "
                                 "feature reference from")
    model, meta = model_from_checkpoint(state)
    subjects = cohort_subjects(str(data), split)
    return references(lambda s: feature_maps(model, s, batch_size, device), meta, subjects,
                      draws=DRAWS if draws is None else draws,
                      seed=int(run.train_config.get("seed", 0)) if run else 0,
                      drawn_from={k: len(split.get(k, [])) for k in ("train", "validation")})


def reference_of_checkpoint(checkpoint: str | Path | Checkpoint | dict[str, Any],
                            data: str | Path | None = None, batch_size: int = 16,
                            device: str = "cpu") -> dict[str, Any]:
    """The feature reference alone (`ood_references_of_checkpoint`)."""
    return ood_references_of_checkpoint(checkpoint, data, batch_size=batch_size,
                                        device=device)[features.KEY]


def add_ood_references(checkpoint: str | Path, data: str | Path | None = None, *,
                       out: str | Path | None = None, draws: int | None = None
                       ) -> dict[str, Any]:
    """Record `ood_references_of_checkpoint` in the checkpoint's metadata, replacing the
    records of those checks (an export then carries them), and write it to `out` (default:
    the checkpoint itself); returns the records."""
    state = read_checkpoint(checkpoint)
    records = ood_references_of_checkpoint(state, data, draws=draws)
    meta = state.model_metadata(checkpoint)
    kept = {k: v for k, v in meta.ood.items() if k not in OOD_KEYS}
    meta.ood = {**kept, **records}
    state.metadata = meta.to_json()
    save_checkpoint(state, out if out is not None else checkpoint)
    return records


def add_feature_reference(checkpoint: str | Path, data: str | Path | None = None
                          ) -> dict[str, Any]:
    """`add_ood_references` in place; returns the feature record."""
    return add_ood_references(checkpoint, data)[features.KEY]
