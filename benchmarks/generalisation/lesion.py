"""A documented, crude rule for the T2w-bright lesion of a scan, to score outside it too.

Real test scans (BraTS-style) each hold a tumour whose T2w signal no T1w intensity
predicts; scores over the whole brain mix "translates tissue well" with "cannot
guess the oedema". Scoring also inside the brain *without* the bright lesion
separates the two. There is no lesion label to use, so the lesion is found by a
fixed rule (`bright_lesion_mask`), stated here so that numbers can be reproduced
and their limits judged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

#: Candidate voxels: T2w above this multiple of the brain's median T2w ...
T2_FACTOR = 1.6
#: ... and T1w above this multiple of the brain's median T1w (not CSF, dark on T1w).
T1_FACTOR = 0.75
#: Binary opening (6-connectivity) that removes thin and speckle candidates.
OPENING_ITERATIONS = 2
#: Smallest component kept (ml).
MIN_VOLUME_ML = 2.0
#: Smallest mean depth of a kept component inside the brain (mm): sulcal CSF lies at the rim.
MIN_DEPTH_MM = 8.0
#: Voxels added around the kept components (6-connectivity), for the lesion's soft edge.
DILATION_ITERATIONS = 2


def bright_lesion_mask(t1: np.ndarray, t2: np.ndarray, brain: np.ndarray,
                       voxel_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Voxels of the T2w-bright lesion (bool, the grid of the inputs; empty if none is found).

    The rule, on one grid (`t2` resampled onto `t1`'s), `brain` being the T1w
    foreground (`mri2mri.runtime.imaging.normalize.foreground_mask`):

    1. candidates: brain & (T2w > 1.6 x median T2w in the brain)
       & (T1w > 0.75 x median T1w in the brain): bright on T2w but not CSF-dark on T1w;
    2. binary opening, 6-connectivity, 2 iterations;
    3. keep the connected components (6-connectivity) of at least 2 ml whose mean
       depth inside the brain (Euclidean distance transform of `brain`, in mm) is
       at least 8 mm;
    4. dilate by 2 voxels (6-connectivity) and restrict to the brain.

    Limits (measured on four real BraTS-style T1w/T2w pairs: 7.6, 0, 137 and 69 ml):
    a subtle tumour whose T2w signal stays under the threshold is missed (0 ml);
    ventricles are bright on T2w and, where the T1w is not dark enough there
    (partial volume, T1w-hypointense tumour nearby), part of them is taken as lesion
    (the 137 ml); T1w-dark oedema is left out by step 1. It is a scoring aid for
    "outside the obvious lesion", not a segmentation.
    """
    brain = np.asarray(brain, dtype=bool)
    if t1.shape != brain.shape or t2.shape != brain.shape:
        raise ValueError(f"shapes differ: T1w {t1.shape}, T2w {t2.shape}, brain {brain.shape}")
    if not brain.any():
        return np.zeros(brain.shape, dtype=bool)
    six = ndimage.generate_binary_structure(3, 1)
    candidates = (brain & (t2 > T2_FACTOR * np.median(t2[brain]))
                  & (t1 > T1_FACTOR * np.median(t1[brain])))
    candidates = ndimage.binary_opening(candidates, six, iterations=OPENING_ITERATIONS)
    labels, count = ndimage.label(candidates, six)
    if count == 0:
        return np.zeros(brain.shape, dtype=bool)
    index = np.arange(1, count + 1)
    voxel_ml = float(np.prod(voxel_mm)) / 1000.0
    volume_ml = np.bincount(labels.ravel(), minlength=count + 1)[1:] * voxel_ml
    depth = ndimage.distance_transform_edt(brain, sampling=list(voxel_mm))
    mean_depth = np.asarray(ndimage.mean(depth, labels, index))
    kept = index[(volume_ml >= MIN_VOLUME_ML) & (mean_depth >= MIN_DEPTH_MM)]
    lesion = np.isin(labels, kept)
    if kept.size:
        lesion = ndimage.binary_dilation(lesion, six, iterations=DILATION_ITERATIONS)
    return lesion & brain


def volume_ml(mask: np.ndarray, voxel_mm: Sequence[float]) -> float:
    """The volume of a mask in ml."""
    return float(np.count_nonzero(mask)) * float(np.prod(voxel_mm)) / 1000.0
