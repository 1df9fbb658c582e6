"""Are the network's own features like its training subjects'? A model-based OOD figure.

The histogram distance (`mri2mri.runtime.synthesis.ood`) and the disagreement figure
(`mri2mri.runtime.synthesis.disagreement`) both missed real scanners for a model trained
only on simulated data, although it did worse there than a look-up table. The
statistics of the network's bottleneck saw them: the innermost encoder block's
activations summarise what the network makes of the input, and inputs from a scanner
or contrast it never saw move them away from where its training subjects put them.

Definition (version `DEFINITION_VERSION`; training and runtime call these functions):

- maps: the innermost encoder block's output, (N, C, h, w), on the disagreement check's
  slices (`disagreement.chosen_slices`: up to 16 evenly spaced foreground slices); the
  ONNX model returns it as its second output, `OUTPUT_NAME`;
- per slice, a vector of C numbers: each channel's mean over the foreground cells, where
  the first source's foreground mask is averaged over each cell's block of pixels and a
  cell is foreground above 0.5; a slice with no foreground cell is dropped (`measure`);
- the figure of a scan: the mean over channels c of ``|mean over its slices of v_c - mu_c|
  / sd_c``, where mu and sd are the reference slices' per-channel mean and standard
  deviation (sd floored at `SD_FLOOR` times its median over channels, so that a nearly
  constant channel cannot dominate; `figure`).

Reference (``ModelMetadata.ood["features"]``, `reference`; version 2): mu and sd over every
slice of the model's reference scans: its training and validation subjects, each as given
and in several draws of its training augmentation (`mri2mri.train.ood_reference`: a model
trained on randomised contrasts, bias, noise and blur was made for inputs like those, not
only like the clean subjects; version 1 took the clean subjects alone and warned on real
scans the starter models translate well); each reference scan's leave-one-subject-out
figure (against the other subjects' scans: what "usual" looks like for a scan the
statistics have not seen), and a threshold of `THRESHOLD_MULTIPLE` times the largest.

No torch: the maps come from the ONNX model's second output (runtime) or from the torch
network (training, `mri2mri.train.feature_reference`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mri2mri.runtime.synthesis.disagreement import FIGURE_SLICES
from mri2mri.runtime.synthesis.verdict import FigureVerdict

#: Bumped when the definition changes: a reference of another version is not compared.
DEFINITION_VERSION = 2
#: Key of this check in `ModelMetadata.ood`.
KEY = "features"
#: Name of the ONNX model's second output: the innermost encoder block's activations.
OUTPUT_NAME = "features"
#: Threshold = this multiple of the largest leave-one-out figure of the reference subjects.
#: Calibrated on data: docs/training.md, "Out-of-distribution check on real scans".
THRESHOLD_MULTIPLE = 1.0
#: A channel's sd is at least this fraction of the median channel sd (a dead channel's
#: spread is ~0, and fp16 or rounding noise would make its z-score explode).
SD_FLOOR = 0.01


def measure(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-slice feature vectors (M, C) of maps (N, C, h, w) inside `mask` (N, H, W).

    H and W must be whole multiples of h and w (the U-Net halves the slice at each
    level); slices without a foreground cell are dropped, so M <= N.
    """
    maps = np.asarray(maps, dtype=np.float64)
    n, channels, h, w = maps.shape
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape[0] != n or mask.shape[1] % h or mask.shape[2] % w:
        raise ValueError(f"feature maps {maps.shape} do not tile the mask {mask.shape}")
    kh, kw = mask.shape[1] // h, mask.shape[2] // w
    cells = mask.reshape(n, h, kh, w, kw).mean(axis=(2, 4)) > 0.5
    rows = [maps[i][:, cells[i]].mean(axis=1) for i in range(n) if cells[i].any()]
    return np.array(rows) if rows else np.zeros((0, channels))


def spread(slices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (floored) standard deviation of reference vectors (M, C)."""
    mean, sd = slices.mean(axis=0), slices.std(axis=0)
    floor = max(SD_FLOOR * float(np.median(sd)), 1e-6)
    return mean, np.maximum(sd, floor)


def figure(scan: np.ndarray, mean: Sequence[float], sd: Sequence[float]) -> float:
    """The figure of one scan's vectors (M, C) against a reference's mean and sd."""
    mean, sd = np.asarray(mean, dtype=np.float64), np.asarray(sd, dtype=np.float64)
    return float(np.mean(np.abs(scan.mean(axis=0) - mean) / sd))


def _round(values: Sequence[float] | np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def _scans(subject: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """A subject's scans: one (M, C) array, or a sequence of them (its draws)."""
    scans = [subject] if isinstance(subject, np.ndarray) and subject.ndim == 2 else subject
    return [np.asarray(s, dtype=np.float64) for s in scans if len(s)]


def reference(subjects: Sequence[np.ndarray | Sequence[np.ndarray]],
              multiple: float = THRESHOLD_MULTIPLE, **about: Any) -> dict[str, Any]:
    """What the model records (``ModelMetadata.ood["features"]``) from its reference
    subjects' vectors: per subject one (M, C) array, or a sequence of them (the subject
    as given and its augmented draws); `about` is kept as is (which subjects, draws).

    Empty scans and subjects are left out; at least two subjects must remain
    (leave-one-subject-out: each scan against the other subjects' scans).
    """
    kept = [scans for scans in map(_scans, subjects) if scans]
    if len(kept) < 2:
        raise ValueError("a feature reference needs at least two subjects with foreground")
    every = [np.concatenate(scans) for scans in kept]
    mean, sd = spread(np.concatenate(every))
    loo = [figure(scan, *spread(np.concatenate(every[:i] + every[i + 1:])))
           for i, scans in enumerate(kept) for scan in scans]
    return {"version": DEFINITION_VERSION, "output": OUTPUT_NAME, "slices": FIGURE_SLICES,
            "channels": int(mean.size), "subjects": len(kept),
            "scans": sum(map(len, kept)),
            "reference_slices": int(sum(len(s) for s in every)), **about,
            "mean": _round(mean), "sd": _round(sd), "leave_one_out": _round(loo),
            "multiple": multiple, "threshold": float(f"{multiple * max(loo):.6g}")}


@dataclass
class Verdict(FigureVerdict):
    """The feature check's verdict on one input (JSON-able with `as_dict`)."""

    LABEL = "feature figure"
    DECIMALS = 3
    FLAGGED = "the network's features are unlike its training subjects'"
    HINT = " (another scanner or contrast)"

    #: The largest leave-one-out figure of the reference subjects ("usual").
    reference_max: float | None = None


def usable_reference(scan: np.ndarray | None, recorded: Mapping[str, Any], *, key: str,
                     version: int, vector: str) -> tuple[dict[str, Any], str]:
    """A feature-based check's recorded reference and "", or {} and why it cannot judge
    `scan` (no feature output, no foreground, no or another reference, other channels);
    `vector` names a per-channel field of the reference."""
    if scan is None:
        return {}, "the model has no feature output (exported before this check)"
    if not len(scan):
        return {}, "no foreground slices"
    ref = recorded.get(key) or {}
    if not ref:
        return {}, "no reference recorded in the model"
    if ref.get("version") != version:
        return {}, "the model's reference uses another definition"
    if len(ref[vector]) != scan.shape[1]:
        return {}, f"the reference has {len(ref[vector])} channels, the network {scan.shape[1]}"
    return ref, ""


def judge(scan: np.ndarray | None, recorded: Mapping[str, Any]) -> Verdict:
    """The verdict on one scan's vectors (`measure`; None: the model has no feature output)
    against the model's `ModelMetadata.ood` record.

    The figure needs the reference's mean and sd: a model trained before this existed
    gets no figure, only the reason.
    """
    ref, why = usable_reference(scan, recorded, key=KEY, version=DEFINITION_VERSION,
                                vector="mean")
    if why:
        return Verdict(slices=0 if scan is None else len(scan), skipped=why)
    value = round(figure(scan, ref["mean"], ref["sd"]), 6)
    return Verdict(flagged=value > ref["threshold"], figure=value, threshold=ref["threshold"],
                   slices=len(scan), reference_max=max(ref["leave_one_out"]))
