"""The two error protocols: known truth (simulated data) and consistency (real data).

Let S be the static image, T the moving one, and M a head motion; the moved
static image is S' = S o M^-1. A method returns A with S'(y) ~ T(A y).

- Known truth: when S and T are aligned in world space (the demo cohort, by
  construction), the right answer is A = M^-1.
- Consistency: real scans of one session are never exactly aligned, so register
  the unmoved pair once (A0) and expect A0 M^-1 after the motion. This measures
  whether a method finds the *same* alignment wherever the head is, not whether
  that alignment is right.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.benchmarks.registration.metrics import errors
from mri2mri.benchmarks.registration.motion import apply_motion, foreground_centre
from mri2mri.runtime.imaging.normalize import foreground_mask

KNOWN_TRUTH, CONSISTENCY = "known_truth", "consistency"
PROTOCOLS = (KNOWN_TRUTH, CONSISTENCY)

Method = Callable[[nib.Nifti1Image, nib.Nifti1Image], tuple[np.ndarray, float]]


def brain_points(img: nib.spatialimages.SpatialImage, max_points: int = 50000) -> np.ndarray:
    """World coordinates of (at most `max_points`, evenly strided) foreground voxels."""
    idx = np.argwhere(foreground_mask(np.asarray(img.dataobj, dtype=np.float32)))
    step = max(1, len(idx) // max_points)
    return nib.affines.apply_affine(img.affine, idx[::step])


def surface_points(img: nib.spatialimages.SpatialImage, mask: np.ndarray | None = None,
                   max_points: int = 20000) -> tuple[np.ndarray, np.ndarray]:
    """World coordinates and outward unit normals of (at most `max_points`, evenly strided)
    voxels on the mask's surface.

    The surface is the mask less its erosion; the mask defaults to the image's
    foreground (the brain, in a cohort without skull such as the demo's). Normals: the
    gradient of the mask smoothed by a 1-voxel Gaussian, carried to world space.
    """
    if mask is None:
        mask = foreground_mask(np.asarray(img.dataobj, dtype=np.float32))
    idx = np.argwhere(mask & ~ndimage.binary_erosion(mask))
    idx = idx[::max(1, len(idx) // max_points)]
    smooth = ndimage.gaussian_filter(mask.astype(np.float32), 1.0)
    gradient = np.stack([g[tuple(idx.T)] for g in np.gradient(smooth)], axis=1)
    normals = -gradient @ np.linalg.inv(img.affine[:3, :3])  # covectors: inverse transpose
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return nib.affines.apply_affine(img.affine, idx), normals / np.maximum(length, 1e-12)


def evaluate_pair(moving: nib.Nifti1Image, static: nib.Nifti1Image, *, motion: np.ndarray,
                  methods: Sequence[tuple[str, Method]],
                  on_found: Callable[[str, nib.Nifti1Image, np.ndarray, float], None] | None
                  = None) -> list[dict[str, object]]:
    """Run every method on the unmoved and the moved pair; one row per method and protocol.

    `on_found(method, moved, affine, seconds)` sees each method's result on the moved pair
    (the QC pages are drawn from it).
    """
    moved = apply_motion(static, motion)
    centre = foreground_centre(moved)
    points, (surface, normals) = brain_points(moved), surface_points(moving)
    truth = np.linalg.inv(motion)
    rows: list[dict[str, object]] = []
    for name, method in methods:
        unmoved, seconds_unmoved = method(moving, static)
        cpu_start = time.process_time()  # all threads of this process: fair on a busy machine
        found, seconds = method(moving, moved)
        cpu_seconds = time.process_time() - cpu_start
        if on_found is not None:
            on_found(name, moved, found, seconds)
        references = {KNOWN_TRUTH: truth, CONSISTENCY: unmoved @ np.linalg.inv(motion)}
        for protocol, reference in references.items():
            row: dict[str, object] = {"method": name, "protocol": protocol,
                                      "seconds": seconds, "cpu_seconds": cpu_seconds,
                                      "seconds_unmoved": seconds_unmoved}
            row.update(errors(found, reference, centre=centre, brain_points=points,
                              surface_points=surface, surface_normals=normals).as_dict())
            rows.append(row)
    return rows
