"""Smooth random fields in world coordinates: anatomy deformations, bias fields, EPI distortion.

Fields are drawn on a coarse lattice (one node every `spacing` mm), smoothed, and
evaluated anywhere by cubic-spline interpolation, so any image grid of a subject
sees the same continuous field.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class LatticeField:
    """A smooth scalar field sampled on a regular world-space lattice."""

    values: np.ndarray  # (nx, ny, nz)
    origin: np.ndarray  # world coordinate of node (0, 0, 0), mm
    spacing: float  # mm

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Evaluate at world points of shape (N, 3)."""
        idx = (points - self.origin) / self.spacing
        return ndimage.map_coordinates(self.values, idx.T, order=3, mode="nearest")


def random_field(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, *, spacing: float,
                 smoothness: float, amplitude: float) -> LatticeField:
    """Gaussian random field over the box [lo, hi], max |value| = `amplitude`.

    `smoothness` is the Gaussian smoothing sigma in mm (the field's correlation length).
    """
    margin = 2 * spacing
    shape = np.ceil((hi - lo + 2 * margin) / spacing).astype(int) + 1
    noise = rng.standard_normal(tuple(shape))
    smooth = ndimage.gaussian_filter(noise, smoothness / spacing, mode="wrap")
    smooth *= amplitude / max(np.abs(smooth).max(), 1e-12)
    return LatticeField(smooth, lo - margin, spacing)


def grid_points(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates (N, 3) of every voxel centre of a grid, in C order."""
    ijk = np.indices(shape[:3], dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ ijk + affine[:3, 3:4]).T


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx
