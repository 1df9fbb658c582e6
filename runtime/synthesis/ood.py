"""Is this scan like the ones the model was trained on? A compact summary and a distance.

A U-Net asked to translate a scan unlike its training data still returns a
plausible image, and can invent anatomy. So at training time the model records,
per source contrast, what its inputs looked like *after* the shared
normalisation (a histogram of the foreground intensities), plus the voxel sizes
and fields of view; at run time each input is summarised the same way and
compared with that record.

Distance: the Hellinger distance between the input's foreground histogram and
the training mean histogram (0: identical, 1: no overlap), on normalised
intensities (the foreground's 99.5th percentile is +1, zero is -1). It reacts
to the *shape* of the distribution (a CT's two spikes, a T2w's bright CSF, a
strong bias field's smear), which the earth mover's distance, also tried,
separated less well. `DISTANCE_THRESHOLD` was chosen on held-out data (see
docs/runtime.md, "Unlike the training data", and
``mri2mri-bench ood-threshold``). Header checks flag voxel sizes
more than `VOXEL_FACTOR` times outside the training range and fields of view
that cannot hold a human brain.

No torch: the trainer and the runtime both call these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from nibabel.affines import voxel_sizes

from mri2mri.runtime.imaging.preprocess import PreparedSources
from mri2mri.runtime.imaging.slicing import from_slices

#: Histogram of normalised foreground intensities: BINS bins over [LOW, HIGH]
#: (values outside are counted in the end bins).
LOW, HIGH, BINS = -1.0, 1.5, 50
#: Flag an input whose histogram is farther than this (Hellinger) from the training mean.
#: Chosen on held-out data: see docs/runtime.md.
DISTANCE_THRESHOLD = 0.30
#: Flag a voxel size outside [training min / VOXEL_FACTOR, training max * VOXEL_FACTOR].
VOXEL_FACTOR = 2.0
#: A human brain's extent (mm): a field of view or foreground smaller than MIN_BRAIN_MM along
#: its longest axis, or larger than MAX_FOV_MM, is not a brain scan.
MIN_BRAIN_MM, MAX_FOV_MM = 80.0, 600.0
SUMMARY_VERSION = 1
#: Key of the distance's per-model calibration in `ModelMetadata.ood` (`calibration`).
KEY = "histogram"
#: Version of that calibration's definition (`calibration`).
CALIBRATION_VERSION = 1
#: The calibrated threshold is this percentile of the reference draws' distances.
CALIBRATION_PERCENTILE = 90


def calibration(distances: Sequence[float], **about: Any) -> dict[str, Any]:
    """A model's own distance threshold (``ModelMetadata.ood["histogram"]``) from the
    distances of its reference scans drawn with its training augmentation
    (`mri2mri.train.ood_reference`): their `CALIBRATION_PERCENTILE`th percentile, never
    below `DISTANCE_THRESHOLD`. A model trained on randomised contrasts was made for inputs
    whose histograms differ that much from its training mean; one trained without
    augmentation keeps 0.30. Not the largest distance: the most extreme draws of a random
    curve, gamma and bias field are far from any scanner, and with it the check lost every
    wrong contrast and a phantom (docs/runtime.md, "Unlike the training data")."""
    if not len(distances):
        raise ValueError("no reference distances to calibrate the histogram check on")
    high = float(np.percentile(distances, CALIBRATION_PERCENTILE))
    return {"version": CALIBRATION_VERSION, "scans": len(distances), **about,
            "distance_median": round(float(np.median(distances)), 6),
            "distance_p90": round(high, 6), "distance_max": round(float(max(distances)), 6),
            "percentile": CALIBRATION_PERCENTILE,
            "threshold": round(max(DISTANCE_THRESHOLD, high), 4)}


def recorded_threshold(recorded: Mapping[str, Any]) -> float:
    """The distance threshold a model records (`calibration`), else `DISTANCE_THRESHOLD`."""
    ref = recorded.get(KEY) or {}
    if ref.get("version") != CALIBRATION_VERSION:
        return DISTANCE_THRESHOLD
    return float(ref["threshold"])


def histogram(values: np.ndarray) -> list[float]:
    """Normalised-intensity histogram (sums to 1) on the fixed bins."""
    counts, _ = np.histogram(np.clip(values, LOW, HIGH), bins=BINS, range=(LOW, HIGH))
    total = counts.sum()
    return (counts / total).tolist() if total else [0.0] * BINS


def hellinger(a: Sequence[float], b: Sequence[float]) -> float:
    """Hellinger distance between two histograms that each sum to 1: 0 same, 1 disjoint."""
    diff = np.sqrt(np.asarray(a, dtype=float)) - np.sqrt(np.asarray(b, dtype=float))
    return float(np.sqrt(0.5 * np.sum(diff ** 2)))


def _extent_mm(mask: np.ndarray, zooms: Sequence[float]) -> list[float]:
    if not mask.any():
        return [0.0, 0.0, 0.0]
    spans = []
    for axis, zoom in enumerate(zooms):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hit = np.flatnonzero(mask.any(axis=other))
        spans.append(float((hit[-1] - hit[0] + 1) * zoom))
    return spans


def summarize_subject(volumes: Mapping[str, np.ndarray], mask: np.ndarray,
                      zooms: Sequence[float]) -> dict[str, Any]:
    """One subject's summary: per contrast, the foreground histogram; and its geometry.

    `volumes` are the normalised source volumes on one canonical grid (what the
    network is given), `mask` their foreground, `zooms` the voxel size in mm.
    Small and JSON-able (about 60 numbers per contrast).
    """
    zooms = [float(z) for z in zooms]
    return {
        "histograms": {c: histogram(np.asarray(v)[mask]) for c, v in volumes.items()},
        "voxel_size_mm": zooms,
        "field_of_view_mm": [float(n * z) for n, z in zip(mask.shape, zooms, strict=True)],
        "foreground_extent_mm": _extent_mm(mask, zooms),
    }


def summarize_prepared(prepared: PreparedSources, sources: Sequence[str]) -> dict[str, Any]:
    """`summarize_subject` of a subject as `prepare_sources` made it (model channel order)."""
    volumes = {c: from_slices(prepared.slices[:, i], prepared.padding)
               for i, c in enumerate(sources)}
    zooms = voxel_sizes(prepared.view.affine)
    return summarize_subject(volumes, prepared.mask, zooms)


def combine_summaries(summaries: Sequence[Mapping[str, Any]],
                      name: str | None = None) -> dict[str, Any]:
    """The training set's summary: mean histogram per contrast, geometry ranges, and how far
    each training subject is from the mean (for the report: what "usual" looks like)."""
    if not summaries:
        raise ValueError("no subject summaries to combine")
    contrasts = list(summaries[0]["histograms"])
    combined: dict[str, Any] = {"version": SUMMARY_VERSION, "subjects": len(summaries),
                                "bins": [LOW, HIGH, BINS], "contrasts": {}}
    if name:
        combined["dataset"] = name
    for c in contrasts:
        mean = np.mean([s["histograms"][c] for s in summaries], axis=0)
        distances = [hellinger(s["histograms"][c], mean) for s in summaries]
        combined["contrasts"][c] = {"histogram": [round(float(v), 6) for v in mean],
                                    "training_distance_max": round(max(distances), 6)}
    for key in ("voxel_size_mm", "field_of_view_mm", "foreground_extent_mm"):
        values = np.array([s[key] for s in summaries], dtype=float)
        combined[key] = [round(float(values.min()), 4), round(float(values.max()), 4)]
    return combined


@dataclass
class Assessment:
    """The verdict on one input: flagged or not, the figures, and why."""

    flagged: bool
    distances: dict[str, float] = field(default_factory=dict)
    threshold: float = DISTANCE_THRESHOLD
    reasons: list[str] = field(default_factory=list)
    checked: bool = True

    @property
    def message(self) -> str:
        if not self.checked:
            return "not checked (the model has no training-data summary)"
        if not self.flagged:
            figures = ", ".join(f"{c} {d:.3f}" for c, d in self.distances.items())
            return f"like the training data (distance {figures} <= {self.threshold:g})"
        return "unlike the training data: " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": self.message}


def assess(subject: Mapping[str, Any], training: Mapping[str, Any],
           threshold: float = DISTANCE_THRESHOLD) -> Assessment:
    """Compare one input's `summarize_subject` with a model's `combine_summaries`."""
    if not training or not training.get("contrasts"):
        return Assessment(False, threshold=threshold, checked=False)
    result = Assessment(False, threshold=threshold)
    for contrast, ref in training["contrasts"].items():
        if contrast not in subject["histograms"]:
            continue
        d = hellinger(subject["histograms"][contrast], ref["histogram"])
        result.distances[contrast] = round(d, 4)
        if d > threshold:
            result.reasons.append(f"{contrast} intensity distance {d:.3f} > {threshold:g}")
    low, high = training["voxel_size_mm"]
    zooms = subject["voxel_size_mm"]
    if min(zooms) < low / VOXEL_FACTOR or max(zooms) > high * VOXEL_FACTOR:
        result.reasons.append(f"voxel size {_mm(zooms)} mm far outside training "
                              f"({low:g}-{high:g} mm)")
    fov, extent = subject["field_of_view_mm"], subject["foreground_extent_mm"]
    if max(fov) < MIN_BRAIN_MM or max(extent) < MIN_BRAIN_MM or max(fov) > MAX_FOV_MM:
        result.reasons.append(f"not brain-sized: field of view {_mm(fov)} mm, foreground "
                              f"{_mm(extent)} mm")
    result.flagged = bool(result.reasons)
    return result


def _mm(values: Sequence[float]) -> str:
    return "x".join(f"{v:.3g}" for v in values)
