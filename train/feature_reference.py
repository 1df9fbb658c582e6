"""The feature check's reference, measured with the torch network.

`mri2mri.runtime.synthesis.features` defines the figure; the runtime reads the feature
maps from the ONNX model's second output, and this module from
`UNet.forward_with_features` (the same tensor, before export). Training records the
reference of its best weights from the slice cache (`_Run.finish`, through
`mri2mri.train.validation.cohort_feature_vectors`); `reference_of_checkpoint` and
`add_feature_reference` make it after the fact, from a checkpoint and its cohort's
files, for checkpoints trained before the check existed.

Reference subjects: the run's own cohort subjects, training and validation. Not the
simulated prior's subjects (`mri2mri.train.prior`), although the network trained on
them: the check asks whether a scan is like the scans the model was made for, the
figures it was calibrated on were measured that way, and the prior's phantoms would
widen the spread towards simulated images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import PreparedSources, prepare_sources
from mri2mri.runtime.synthesis import features
from mri2mri.runtime.synthesis.disagreement import checked_slices

from .checkpoint import Checkpoint, as_checkpoint, read_checkpoint, save_checkpoint
from .dataset import context_stacks
from .inference import model_from_checkpoint
from .model import UNet


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


def reference_of_checkpoint(checkpoint: str | Path | Checkpoint | dict[str, Any],
                            data: str | Path | None = None, batch_size: int = 16,
                            device: str = "cpu") -> dict[str, Any]:
    """The feature reference of a checkpoint's weights, from its cohort's training and
    validation subjects (its split), prepared from their files as the runtime does.

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
    cohort = Cohort.discover(data)
    drawn = {name: list(split.get(name, [])) for name in ("train", "validation")}
    vectors = []
    for sid in drawn["train"] + drawn["validation"]:
        subject = cohort.subject(sid)
        prepared = prepare_sources([subject.load(c) for c in meta.sources], meta.geometry,
                                   meta.normalisation, names=[f"{sid} {c}" for c in meta.sources],
                                   resample_to_first=True)
        vectors.append(prepared_vectors(model, prepared, meta.context, batch_size=batch_size,
                                        device=device))
    return features.reference(vectors, drawn_from={k: len(v) for k, v in drawn.items()})


def add_feature_reference(checkpoint: str | Path, data: str | Path | None = None
                          ) -> dict[str, Any]:
    """Record `reference_of_checkpoint` in the checkpoint's metadata (an export then
    carries it); returns it."""
    state = read_checkpoint(checkpoint)
    record = reference_of_checkpoint(state, data)
    meta = state.model_metadata(checkpoint)
    meta.ood = {**meta.ood, features.KEY: record}
    state.metadata = meta.to_json()
    save_checkpoint(state, checkpoint)
    return record


def record_line(record: dict[str, Any]) -> str:
    """One console line about a feature reference."""
    loo: Sequence[float] = record["leave_one_out"]
    return (f"feature statistics ({record['subjects']} training and validation subjects, each "
            f"against the others): {min(loo):.3f}-{max(loo):.3f}; threshold "
            f"{record['threshold']:.3g}")
