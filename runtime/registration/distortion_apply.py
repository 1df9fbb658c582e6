"""Undistort every volume of an EPI series in one resampling, with a rigid map to the T1w.

Why one resampling: each interpolation blurs, so the rigid alignment with the T1w and the
susceptibility correction are composed into one set of sample positions, used for every
volume. The output keeps the input's grid (shape, affine, volume order); its content is
moved into the T1w's world alignment, which is why the b-vectors rotate with the rigid part.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .distortion_field import Displacement


def sample_positions(shape: tuple[int, int, int], affine: np.ndarray, displacement: Displacement,
                     rigid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(voxel positions in the distorted image, Jacobian) for every output voxel.

    `rigid` is `Registration.affine` of the T1w registered to this image (its world ->
    the T1w's world): output voxel x, at world w, shows what the T1w shows at w, which is
    this image's undistorted point rigid^-1(w); its signal lies `displacement` further
    along the phase-encoding axis. None: the output stays in the image's own alignment.
    """
    grid = np.indices(shape, dtype=np.float64).reshape(3, -1)
    shift = displacement.voxels.astype(np.float64)
    jacobian = displacement.jacobian().astype(np.float64)
    if rigid is None:
        source = grid
        d, jac = shift.ravel(), jacobian.ravel()
    else:
        vox = np.linalg.inv(affine) @ np.linalg.inv(rigid) @ affine
        source = vox[:3, :3] @ grid + vox[:3, 3:4]
        d = ndimage.map_coordinates(shift, source, order=1, mode="nearest")
        jac = ndimage.map_coordinates(jacobian, source, order=1, mode="nearest")
    source = source.copy()
    source[displacement.pe_axis] += d
    return source, np.clip(jac, 0.0, None)


def unwarp_series(data: np.ndarray, affine: np.ndarray, displacement: Displacement, *,
                  rigid: np.ndarray | None = None, order: int = 3,
                  progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Every volume of `data` (3D or 4D) resampled at the same corrected positions.

    Cubic B-spline interpolation (clipped at zero: spline overshoot must not make a
    magnitude negative), times the Jacobian of the displacement: where the read-out piled
    signal up, the correction spreads it out again, and the reverse.
    """
    volumes = data[..., None] if data.ndim == 3 else data
    shape = volumes.shape[:3]
    positions, jacobian = sample_positions(shape, affine, displacement, rigid)
    out = np.empty(volumes.shape, np.float32)
    for n in range(volumes.shape[3]):
        values = ndimage.map_coordinates(np.asarray(volumes[..., n], np.float32), positions,
                                         order=order, mode="constant", cval=0.0)
        out[..., n] = np.maximum(values * jacobian, 0.0).reshape(shape)
        if progress is not None:
            progress(n + 1, volumes.shape[3])
    return out[..., 0] if data.ndim == 3 else out


def rotation_part(matrix: np.ndarray) -> np.ndarray:
    """The nearest rotation to a 3x3 matrix (polar decomposition): a grid's axes, a rigid map."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, float)[:3, :3])
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        u[:, -1] *= -1
        rotation = u @ vt
    return rotation


def rotate_bvecs(bvecs: np.ndarray, affine: np.ndarray, rigid: np.ndarray) -> np.ndarray:
    """b-vectors (3, N; FSL convention) of the series after its content moved by `rigid`.

    FSL's b-vectors are in the image's voxel axes, with the first axis flipped when the
    voxel-to-world matrix has a positive determinant. The content at this image's world
    point s moves to rigid(s), so each direction turns by the rigid map's rotation.
    """
    axes = np.asarray(affine, float)[:3, :3]
    directions = axes / np.linalg.norm(axes, axis=0)
    flip = np.diag([-1.0, 1.0, 1.0]) if np.linalg.det(axes) > 0 else np.eye(3)
    to_world = directions @ flip
    turn = np.linalg.inv(to_world) @ rotation_part(rigid) @ to_world
    out = turn @ np.asarray(bvecs, float)
    norms = np.linalg.norm(bvecs, axis=0)
    keep = norms > 0
    out[:, keep] *= norms[keep] / np.linalg.norm(out[:, keep], axis=0)
    return out
