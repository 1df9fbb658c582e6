"""Robust intensity normalisation with an exact inverse.

MRI magnitude images have a physical zero (background), so only the upper end is
estimated: `multiple` times the `percentile` of the foreground intensities maps to +1
and zero maps to -1, matching the network's tanh output range. The map is linear,
hence exactly invertible; nothing is clipped here.

Two anchors are in use (`mri2mri.runtime.metadata.Normalisation.method`):
``foreground-percentile`` (the 99.5th percentile is +1: training's default) and
``foreground-median`` (`MEDIAN_MULTIPLE` times the median is +1: ``mri2mri-train
--normalisation median``). The median is set by the bulk of the tissue, so the same
tissue lands at the same value on every scanner; a high percentile moves with
whatever is brightest, e.g. a T2w-bright lesion or fat, and with it every tissue
(docs/training.md, "Tissue-anchored normalisation and the LUT residual").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

DEFAULT_PERCENTILE = 99.5
DEFAULT_MASK_FRACTION = 0.1
#: Median anchor: the foreground median times this maps to +1, so the median itself is at
#: 2 / 4.5 - 1 = -0.56. Chosen so that the brightest T2w tissue of real scans (99.9th
#: percentile up to 5.3 x the median, 99.5th 2.5-4.4 x) stays within the tanh range.
MEDIAN_MULTIPLE = 4.5


def foreground_mask(data: np.ndarray, fraction: float = DEFAULT_MASK_FRACTION) -> np.ndarray:
    """Voxels brighter than `fraction` of the 99th percentile of positive voxels, holes filled.

    Robust to Rician background noise and a few hot voxels; good enough to pick
    normalisation statistics and to restrict image-quality metrics to the head.
    """
    positive = data[data > 0]
    if positive.size == 0:
        return np.zeros(data.shape, dtype=bool)
    threshold = fraction * float(np.percentile(positive, 99))
    mask = data > threshold
    mask = ndimage.binary_opening(mask, iterations=1) if mask.sum() > 1000 else mask
    return ndimage.binary_fill_holes(mask)


def intensity_scale(data: np.ndarray, mask: np.ndarray | None = None,
                    percentile: float = DEFAULT_PERCENTILE, multiple: float = 1.0) -> float:
    """The intensity that `normalize` maps to +1: `multiple` x a percentile of the foreground."""
    mask = foreground_mask(data) if mask is None else mask
    values = data[mask] if mask.any() else data[data > 0]
    scale = multiple * float(np.percentile(values, percentile)) if values.size else 0.0
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError("cannot normalise: no positive foreground intensities")
    return scale


def normalize(data: np.ndarray, scale: float) -> np.ndarray:
    """Map [0, scale] linearly to [-1, 1] (float32)."""
    return (data.astype(np.float32) * np.float32(2.0 / scale) - np.float32(1.0))


def denormalize(values: np.ndarray, scale: float) -> np.ndarray:
    """Exact inverse of `normalize`."""
    return ((values.astype(np.float32) + np.float32(1.0)) * np.float32(scale / 2.0))
