"""Masks for registration: check a user's mask against its image, read one from a file, or make one.

Why masks: mutual information counts every voxel it visits, so tissue that one image
shows and the other does not (neck, eyes, a synthesized image's invented background)
pulls the alignment. A mask restricts the metric to the brain. Masks are boolean
arrays on their image's own grid; `brain_mask` makes one automatically with DIPY's
`median_otsu` (made for b=0 images; it works on T1w-like synthesized images too).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.core.errors import InputError, exception_summary

from .grids import within

#: `--via-mask`: `auto` masks the synthesized image with `brain_mask`; `none` does not.
VIA_MASKS = ("auto", "none")
#: The default of `--via-mask` (see docs/registration.md, "Masks", for the measurement).
DEFAULT_VIA_MASK = "auto"
#: Largest world-space difference (mm) between a mask's affine and its image's.
GRID_TOLERANCE_MM = 1e-3
#: `brain_mask` works on voxels of about this size (mm): the mask only needs the brain's
#: outline, and the median filter costs in proportion to the voxels it visits.
MASK_VOXEL_MM = 3.5


def check_mask(mask: np.ndarray, image: nib.spatialimages.SpatialImage,
               name: str | Path | None, affine: np.ndarray | None = None) -> np.ndarray:
    """`mask` as a boolean array, or `InputError` naming `name` if it cannot be `image`'s mask.

    A mask must be on its image's grid (same shape, and same affine when `affine` is
    given) and select at least one voxel. Values above zero count as inside.
    """
    mask = np.asarray(mask)
    while mask.ndim > 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    shape = tuple(int(n) for n in image.shape[:3])
    if mask.shape != shape:
        raise InputError(name, f"mask of shape {mask.shape} is not on its image's grid "
                               f"(shape {shape})")
    if affine is not None and not np.allclose(affine, image.affine, atol=GRID_TOLERANCE_MM):
        raise InputError(name, "mask is not on its image's grid (its affine differs)")
    inside = np.nan_to_num(mask.astype(np.float64, copy=False)) > 0
    if not inside.any():
        raise InputError(name, "mask is empty (no voxel above zero)")
    return inside


def load_mask(path: str | Path, image: nib.spatialimages.SpatialImage) -> np.ndarray:
    """Read a NIfTI mask that must lie on `image`'s grid; one-line `InputError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "mask file not found")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for a bad file  # noqa: BLE001
        raise InputError(path, f"not a readable NIfTI mask ({exception_summary(exc)})") from None
    return check_mask(data, image, path, img.affine)


def brain_mask(img: nib.spatialimages.SpatialImage, dilate_mm: float = 4.0) -> np.ndarray:
    """An automatic brain mask on `img`'s grid: DIPY's median_otsu, its largest part, dilated.

    median_otsu (median filter, Otsu threshold) runs on a copy of the image block-averaged
    to voxels of about `MASK_VOXEL_MM` (its default 4-pass, radius-4 filter takes over 20
    CPU seconds on a 2 mm b=0; one radius-1 pass at 3.5 mm takes milliseconds and gives
    the same outline). The largest connected part is kept, holes are filled, and the
    mask grows by `dilate_mm`, so the brain's edge (where most of the alignment signal
    is) stays inside.
    """
    from dipy.segment.mask import median_otsu

    data = np.nan_to_num(np.asarray(img.dataobj, dtype=np.float32))
    zooms = np.asarray(nib.affines.voxel_sizes(img.affine), float)
    block = np.maximum(np.round(MASK_VOXEL_MM / zooms), 1).astype(int)
    coarse = _block_mean(data, block)
    _, mask = median_otsu(coarse, median_radius=1, numpass=1)
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    mask = ndimage.binary_fill_holes(mask)
    full = np.repeat(np.repeat(np.repeat(mask, block[0], 0), block[1], 1), block[2], 2)
    full = full[:data.shape[0], :data.shape[1], :data.shape[2]]
    return within(full, img.affine, dilate_mm) if dilate_mm > 0 else full


def _block_mean(data: np.ndarray, block: np.ndarray) -> np.ndarray:
    """Mean over blocks of `block` voxels (the last partial block padded with its edge)."""
    pad = [(0, int(-n % b)) for n, b in zip(data.shape[:3], block, strict=True)]
    padded = np.pad(data, pad, mode="edge") if any(p for _, p in pad) else data
    s = padded.shape
    return padded.reshape(s[0] // block[0], block[0], s[1] // block[1], block[1],
                          s[2] // block[2], block[2]).mean(axis=(1, 3, 5))
