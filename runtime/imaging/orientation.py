"""Reorient to the closest canonical (RAS+) voxel order and back, exactly.

Only axis permutations and flips are used, so the round trip is lossless and the
affine of the restored data is the original one.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

_RAS = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class CanonicalView:
    """A volume's data in RAS+ voxel order, with what is needed to go back."""

    data: np.ndarray
    affine: np.ndarray
    original_affine: np.ndarray
    original_shape: tuple[int, ...]

    def restore(self, data: np.ndarray) -> np.ndarray:
        """Put data of the canonical grid (same leading 3 axes) back in the original voxel order."""
        back = ornt_transform(_RAS, io_orientation(self.original_affine))
        out = apply_orientation(data, back)
        assert out.shape[:3] == self.original_shape[:3], (out.shape, self.original_shape)
        return out


def to_canonical(img: nib.spatialimages.SpatialImage, data: np.ndarray | None = None
                 ) -> CanonicalView:
    """Return `img` (or `data` on its grid) in closest-canonical RAS+ order."""
    data = np.asanyarray(img.dataobj) if data is None else data
    ornt = io_orientation(img.affine)
    canonical = apply_orientation(data, ornt_transform(ornt, _RAS))
    affine = img.affine @ nib.orientations.inv_ornt_aff(ornt_transform(ornt, _RAS), data.shape)
    return CanonicalView(np.ascontiguousarray(canonical), affine, img.affine.copy(),
                         tuple(data.shape))
