"""Resample one image onto another's voxel grid in world (scanner) coordinates."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to


def same_grid(a: nib.spatialimages.SpatialImage, b: nib.spatialimages.SpatialImage,
              atol: float = 1e-3) -> bool:
    """True when both images have the same shape and (to `atol` mm) the same affine."""
    return a.shape[:3] == b.shape[:3] and np.allclose(a.affine, b.affine, atol=atol)


def resample_to(img: nib.Nifti1Image, reference: nib.spatialimages.SpatialImage,
                order: int = 1) -> nib.Nifti1Image:
    """Resample `img` onto `reference`'s grid (trilinear by default, zero outside the field)."""
    if same_grid(img, reference):
        return img
    out = resample_from_to(img, (reference.shape[:3], reference.affine), order=order,
                           mode="constant", cval=0.0)
    data = np.asarray(out.dataobj, dtype=np.float32)
    if order > 1:  # spline overshoot must not make magnitude images negative
        np.maximum(data, 0, out=data)
    return nib.Nifti1Image(data, reference.affine, reference.header.copy())
