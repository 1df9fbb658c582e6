"""The arrays DIPY registers: an image's voxels, its grid, its mask, coarsened and cropped.

Why a module: DIPY's metric costs in proportion to the static points it visits, so
the fast preset registers on a coarser working grid (anti-aliased) and crops the
static image to its foreground box; masks must follow every such step, and the
world placement must stay exact. `Grid` does each step once, keeping the three together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import nibabel as nib
import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """Voxels, their voxel -> world affine (RAS+ mm) and an optional boolean mask.

    Voxels are float32: DIPY's metric works on its own float64 copies, and on a 1 mm
    volume every float64 pass before that (anti-aliasing, crops) moves twice the memory.
    """

    data: np.ndarray
    affine: np.ndarray
    mask: np.ndarray | None = None

    @classmethod
    def of(cls, img: nib.spatialimages.SpatialImage, mask: np.ndarray | None = None) -> Grid:
        return cls(np.asarray(img.dataobj, dtype=np.float32), img.affine.astype(np.float64),
                   mask)

    @property
    def zooms(self) -> np.ndarray:
        return np.asarray(nib.affines.voxel_sizes(self.affine), float)

    def coarsened(self, voxel_mm: float | None) -> Grid:
        """Voxels of at least `voxel_mm` (Gaussian anti-aliased), same field of view."""
        if voxel_mm is None:
            return self
        ratio = np.maximum(voxel_mm / self.zooms, 1.0)
        if np.allclose(ratio, 1.0):
            return self
        # FWHM of the target voxel, less what the native voxel already integrates.
        sigma = np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0)) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        smooth = ndimage.gaussian_filter(self.data, sigma, mode="constant")
        shape = tuple(int(n) for n in np.ceil(np.array(self.data.shape[:3]) / ratio))
        offset = (ratio - 1.0) / 2.0  # new voxel centres sit at the centre of the old blocks
        scale = np.diag(ratio)
        data = ndimage.affine_transform(smooth, scale, offset, output_shape=shape, order=1,
                                        mode="nearest")
        affine = self.affine.copy()
        affine[:3, :3] = self.affine[:3, :3] * ratio
        affine[:3, 3] = self.affine[:3, :3] @ offset + self.affine[:3, 3]
        mask = None
        if self.mask is not None:
            mask = ndimage.affine_transform(self.mask.astype(np.float32), scale, offset,
                                            output_shape=shape, order=1, mode="constant") > 0.5
        return Grid(data, affine, mask)

    def cropped(self, box: tuple[np.ndarray, np.ndarray] | None, margin_mm: float) -> Grid:
        """The voxels inside the world box `box` (lo, hi corners) plus `margin_mm`."""
        if box is None:
            return self
        corners = np.array([[x, y, z] for x in (box[0][0], box[1][0])
                            for y in (box[0][1], box[1][1]) for z in (box[0][2], box[1][2])])
        ijk = nib.affines.apply_affine(np.linalg.inv(self.affine), corners)
        pad = margin_mm / self.zooms
        lo = np.maximum(np.floor(ijk.min(0) - pad), 0).astype(int)
        hi = np.minimum(np.ceil(ijk.max(0) + pad) + 1, self.data.shape[:3]).astype(int)
        if np.any(hi <= lo):
            return self
        part = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        affine = self.affine.copy()
        affine[:3, 3] = self.affine[:3, :3] @ lo + self.affine[:3, 3]
        return Grid(np.ascontiguousarray(self.data[part]), affine,
                    None if self.mask is None else np.ascontiguousarray(self.mask[part]))

    def moved(self, transform: np.ndarray) -> Grid:
        """The same voxels placed by `transform @ affine` (a change of world frame)."""
        return replace(self, affine=transform @ self.affine)

    def centre_of_mass(self) -> np.ndarray:
        """World position of the intensity centre of mass (inside the mask, if any)."""
        data = self.data if self.mask is None else np.where(self.mask, self.data, 0.0)
        return nib.affines.apply_affine(self.affine, ndimage.center_of_mass(data))


def world_box(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space (min, max) corners of the axis-aligned box around a mask's voxels."""
    idx = np.argwhere(mask) if mask.any() else np.argwhere(np.ones(mask.shape[:3], bool))
    lo, hi = idx.min(0) - 0.5, idx.max(0) + 0.5
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    world = nib.affines.apply_affine(affine, corners)
    return world.min(0), world.max(0)


def within(mask: np.ndarray, affine: np.ndarray, distance_mm: float) -> np.ndarray:
    """The voxels within `distance_mm` of the mask (a dilation by a ball, anisotropic grids too)."""
    zooms = np.asarray(nib.affines.voxel_sizes(affine), float)
    half = np.floor(distance_mm / zooms).astype(int)
    if not half.any():
        return mask
    axes = np.meshgrid(*[np.arange(-h, h + 1) * z for h, z in zip(half, zooms, strict=True)],
                       indexing="ij")
    ball = sum(a ** 2 for a in axes) <= distance_mm ** 2
    return ndimage.binary_dilation(mask, ball)
