"""How far a method's correction is from the truth: sample positions, brain boundary, image.

Why positions rather than fields: every method ends in one map, from each output voxel
(aligned with the T1w, on the b=0's grid) to the place in the acquired b=0 whose signal it
shows. A rigid or affine registration has no field; a field method's field depends on the
rigid transform it was estimated after (a translation along the phase-encoding axis is
the same picture as a constant field, so only the two together are identifiable). The
composed map is what a user gets, and it is comparable across methods: the truth is the
identity (the simulated T1w and b=0 share their world space) plus the true displacement.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .truth import Truth

#: Keys of `score`'s result, in the order of the tables.
ERROR_KEYS = ("pe_mean_mm", "pe_p95_mm", "pe_max_mm", "error3d_mean_mm", "boundary_mm")


def true_positions(truth: Truth) -> np.ndarray:
    """(3, N) voxel positions in the acquired b=0 that each undistorted voxel was read from."""
    grid = np.indices(truth.brain.shape, dtype=np.float64).reshape(3, -1)
    zoom = float(np.linalg.norm(truth.affine[:3, truth.pe_axis]))
    grid[truth.pe_axis] += truth.displacement_mm.ravel() / zoom
    return grid


def position_errors(positions: np.ndarray, truth: Truth) -> tuple[np.ndarray, np.ndarray]:
    """(|error| along the PE axis, |error| in 3D), mm, per voxel of the grid."""
    diff = positions - true_positions(truth)
    zoom = float(np.linalg.norm(truth.affine[:3, truth.pe_axis]))
    shape = truth.brain.shape
    error3d = np.linalg.norm(truth.affine[:3, :3] @ diff, axis=0)
    return (np.abs(diff[truth.pe_axis]) * zoom).reshape(shape), error3d.reshape(shape)


def boundary(mask: np.ndarray) -> np.ndarray:
    """The mask's surface voxels (the mask less its erosion)."""
    return mask & ~ndimage.binary_erosion(mask)


def score(positions: np.ndarray, truth: Truth) -> dict[str, float]:
    """Errors inside the brain: along PE (mean, 95th percentile, largest), 3D mean, boundary."""
    pe, e3 = position_errors(positions, truth)
    inside = pe[truth.brain]
    return {"pe_mean_mm": float(inside.mean()), "pe_p95_mm": float(np.percentile(inside, 95)),
            "pe_max_mm": float(inside.max()), "error3d_mean_mm": float(e3[truth.brain].mean()),
            "boundary_mm": float(e3[boundary(truth.brain)].mean())}


def similarity(corrected: np.ndarray, truth: Truth) -> dict[str, float]:
    """Level-free PSNR, SSIM and MAE (z-scored inside the brain) of the corrected mean b=0
    against the true undistorted one (`mri2mri.train.metrics.level_free_scores`)."""
    from mri2mri.train.metrics import level_free_scores

    return level_free_scores(np.asarray(corrected, np.float32), truth.undistorted_b0,
                             truth.brain)


def field_extent(field_mm: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """How much a field moves the brain (for the no-harm check: nothing to correct)."""
    values = np.abs(field_mm[brain])
    return {"field_mean_mm": float(values.mean()), "field_p95_mm": float(np.percentile(values, 95)),
            "field_max_mm": float(values.max())}
