"""Level-free scoring of one subject's predictions, and the level-free look-up table.

An MRI's absolute intensity is arbitrary (a scanner's units), so a prediction for a
scanner the model never saw is judged level-free: prediction and reference are each
z-scored over the region before scoring (`mri2mri.train.metrics.level_free_scores`).
The baseline it has to beat is `LevelFreeLUT`, a per-intensity map that needs no level
either: its input is the source over the source's own 99th percentile, its output a
z-scored reference. Fitted on other subjects it is what intensity alone transfers
across scanners; fitted on the scored subject itself it is the ceiling of any
per-intensity map (it knows that scanner's own mapping): level-free PSNR is a function of
the correlation with the reference, and the subject's own bin means have the highest
correlation of any map of its bins (the others' LUT is one).

Regions (`regions`): ``brain``, the voxels where both source and reference are above 0
(skull-stripped scans), and ``brain_without_lesion``, the same less the T2w-bright
lesion (`lesion.bright_lesion_mask`, from the pair's T2w whichever side it is on).
Torch-free: the zero-shot benchmark runs an ONNX model through the runtime.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from mri2mri.train.metrics import level_free_region, level_free_scores, zscore

from .lesion import bright_lesion_mask, volume_ml

#: The LUT's input: the source over its own `PERCENTILE`th percentile in the region,
#: clipped to [0, `CLIP`], in `BINS` equal bins.
PERCENTILE = 99.0
CLIP = 1.5
BINS = 128
REGIONS = ("brain", "brain_without_lesion")
#: The contrast the lesion rule looks for (bright lesion) and the one it checks it against.
LESION_BRIGHT, LESION_OTHER = "T2w", "T1w"


def lut_input(source: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The source over its `PERCENTILE`th percentile inside `region`, clipped to [0, CLIP]
    (float64, whole volume)."""
    region = np.asarray(region, dtype=bool)
    if not region.any():
        raise ValueError("the region is empty")
    anchor = float(np.percentile(source[region], PERCENTILE))
    if anchor <= 0:
        raise ValueError(f"the source's {PERCENTILE:g}th percentile in the region is "
                         f"{anchor:g}: nothing to normalise by")
    return np.clip(source.astype(np.float64) / anchor, 0.0, CLIP)


def lut_bins(source: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Each voxel's bin (0 .. BINS - 1) of `lut_input`: [0, CLIP] in BINS equal bins, the
    clipped top (CLIP itself) in the last."""
    scaled = lut_input(source, region)
    return np.minimum((scaled * (BINS / CLIP)).astype(np.int64), BINS - 1)


@dataclass
class LUTStats:
    """Per-bin voxel counts and sums of the z-scored reference: what a fit pools."""

    counts: np.ndarray  # (BINS,) float64
    sums: np.ndarray

    @classmethod
    def of(cls, source: np.ndarray, reference: np.ndarray, region: np.ndarray) -> LUTStats:
        """One subject's statistics over `region` (the reference z-scored over it)."""
        region = np.asarray(region, dtype=bool)
        bins = lut_bins(source, region)[region]
        target = zscore(reference, region)[region]
        return cls(np.bincount(bins, minlength=BINS).astype(np.float64),
                   np.bincount(bins, weights=target, minlength=BINS))

    def __add__(self, other: LUTStats) -> LUTStats:
        return LUTStats(self.counts + other.counts, self.sums + other.sums)


@dataclass
class LevelFreeLUT:
    """`BINS` predictions of the z-scored reference, one per bin of `lut_input`."""

    table: np.ndarray  # (BINS,) float64
    #: Bins no voxel of the fit fell into (their value interpolated).
    empty: int = 0

    @classmethod
    def fit(cls, stats: Iterable[LUTStats]) -> LevelFreeLUT:
        """The mean z-scored reference of each bin, the subjects' voxels pooled (every
        voxel counts once, so a larger brain weighs more). A bin without voxels takes the
        linear interpolation between its nearest non-empty neighbours (beyond the first or
        last non-empty bin: that bin's value)."""
        total = None
        for item in stats:
            total = item if total is None else total + item
        if total is None or not total.counts.any():
            raise ValueError("no voxels to fit the look-up table on")
        seen = total.counts > 0
        centres = np.arange(BINS)
        table = np.interp(centres, centres[seen], total.sums[seen] / total.counts[seen])
        return cls(table, int(BINS - seen.sum()))

    def predict(self, source: np.ndarray, region: np.ndarray) -> np.ndarray:
        """The z-scored reference predicted from `source` (float32; 0 outside `region`)."""
        region = np.asarray(region, dtype=bool)
        return np.where(region, self.table[lut_bins(source, region)], 0.0).astype(np.float32)


def lesion_contrasts(source: str, target: str) -> tuple[str, str] | None:
    """Which of the pair is the T2w the lesion rule needs and which the T1w, as
    ("source" | "target", "source" | "target"); None when the pair is not T1w and T2w."""
    if {source, target} != {LESION_BRIGHT, LESION_OTHER}:
        return None
    return ("source", "target") if source == LESION_BRIGHT else ("target", "source")


def regions(source: np.ndarray, reference: np.ndarray, *, source_contrast: str,
            target_contrast: str, voxel_mm: Sequence[float]
            ) -> tuple[dict[str, np.ndarray], float | None]:
    """The scoring regions of one subject (`REGIONS`; without lesion only where anything
    is left, and only for a T1w/T2w pair) and its lesion's volume (ml; None: not looked
    for). The lesion is the T2w-bright one of `lesion.bright_lesion_mask`, found from the
    T2w whichever side of the translation it is on, so both directions of a pair are
    scored in the same regions."""
    brain = level_free_region(source, reference)
    if not brain.any():
        raise ValueError("source and reference are nowhere both above 0")
    found = {"brain": brain}
    sides = lesion_contrasts(source_contrast, target_contrast)
    if sides is None:
        return found, None
    images = {"source": source, "target": reference}
    t2, t1 = images[sides[0]], images[sides[1]]
    lesion = bright_lesion_mask(t1, t2, brain, voxel_mm)
    if (brain & ~lesion).any():
        found["brain_without_lesion"] = brain & ~lesion
    return found, volume_ml(lesion, voxel_mm)


def score(volumes: dict[str, np.ndarray], reference: np.ndarray,
          where: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> region -> `level_free_scores` of each volume against `reference`."""
    return {method: {name: level_free_scores(volume, reference, mask)
                     for name, mask in where.items()}
            for method, volume in volumes.items()}
