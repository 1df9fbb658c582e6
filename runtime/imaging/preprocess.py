"""The one preprocessing path shared by training and inference.

Sources -> canonical RAS+ -> per-volume normalisation -> padded axial slices, and
network output -> un-padded -> target intensity scale -> original voxel order and
header. `mri2mri.train` calls exactly these functions, so a model sees at
inference what it saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.normalize import (
    denormalize,
    foreground_mask,
    intensity_scale,
    normalize,
)
from mri2mri.runtime.imaging.orientation import CanonicalView, to_canonical
from mri2mri.runtime.imaging.resample import resample_to, same_grid
from mri2mri.runtime.imaging.slicing import (
    Padding,
    SliceGeometry,
    from_slices,
    padding_for,
    to_slices,
)
from mri2mri.runtime.metadata import Normalisation


@dataclass
class PreparedSources:
    """Network-ready slices of one subject's sources, and what is needed to undo it."""

    slices: np.ndarray  # (Z, C, H, W) float32
    reference: nib.Nifti1Image  # the first source as loaded: defines the output geometry
    view: CanonicalView
    padding: Padding
    mask: np.ndarray  # foreground of the first source, canonical grid (X, Y, Z)
    scales: list[float]


def align_sources(images: Sequence[nib.Nifti1Image], names: Sequence[str],
                  resample_to_first: bool = False) -> list[nib.Nifti1Image]:
    """Check that all sources share the first one's grid, or resample them onto it."""
    ref = images[0]
    aligned = [ref]
    for img, name in zip(images[1:], names[1:], strict=True):
        if same_grid(img, ref):
            aligned.append(img)
        elif resample_to_first:
            aligned.append(resample_to(img, ref))
        else:
            raise InputError(name, f"grid {img.shape[:3]} differs from the first input's "
                                   f"{ref.shape[:3]} (or its affine does); pass "
                                   "--resample-to-first to resample onto the first input")
    return aligned


def _normalised_channel(data: np.ndarray, norm: Normalisation
                        ) -> tuple[np.ndarray, np.ndarray, float]:
    mask = foreground_mask(data, norm.mask_fraction)
    scale = intensity_scale(data, mask, norm.percentile, norm.multiple)
    return normalize(data, scale), mask, scale


def prepare_sources(images: Sequence[nib.Nifti1Image], geometry: SliceGeometry,
                    norm: Normalisation, *, names: Sequence[str] | None = None,
                    resample_to_first: bool = False) -> PreparedSources:
    """Turn a subject's source images (in model channel order) into padded axial slices."""
    names = list(names) if names is not None else [f"input {i + 1}" for i in range(len(images))]
    if len(names) != len(images) or not images:
        raise ValueError(f"{len(images)} source images but {len(names)} names")
    images = align_sources(images, names, resample_to_first)
    view = to_canonical(images[0], np.asarray(images[0].dataobj, dtype=np.float32))
    channels, scales, mask = [], [], None
    for img, name in zip(images, names, strict=True):
        data = view.data if img is images[0] else to_canonical(
            img, np.asarray(img.dataobj, dtype=np.float32)).data
        try:
            normed, channel_mask, scale = _normalised_channel(data, norm)
        except ValueError as exc:
            raise InputError(name, str(exc)) from None
        mask = channel_mask if mask is None else mask
        channels.append(normed)
        scales.append(scale)
    padding = padding_for(view.data.shape, geometry)
    return PreparedSources(to_slices(np.stack(channels), padding), images[0], view, padding,
                           mask, scales)


def prepare_target(target: nib.Nifti1Image, prepared: PreparedSources, norm: Normalisation
                   ) -> tuple[np.ndarray, float]:
    """Target slices on the sources' grid, normalised by the target's own scale.

    A target on another grid (b=0 -> T1w) is resampled in world coordinates onto
    the first source's grid, so the model learns in the source's native space.
    """
    target = resample_to(target, prepared.reference)
    data = to_canonical(target, np.asarray(target.dataobj, dtype=np.float32)).data
    normed, _, scale = _normalised_channel(data, norm)
    return to_slices(normed, prepared.padding), scale


def restore_volume(pred_slices: np.ndarray, prepared: PreparedSources, target_scale: float
                   ) -> np.ndarray:
    """Network output slices -> target-scale volume in the reference's original voxel order."""
    canonical = denormalize(from_slices(pred_slices, prepared.padding), target_scale)
    np.maximum(canonical, 0, out=canonical)
    return prepared.view.restore(canonical)


def restore_image(pred_slices: np.ndarray, prepared: PreparedSources, target_scale: float,
                  description: str = "") -> nib.Nifti1Image:
    """Like `restore_volume`, as a NIfTI image with the reference's affine, codes and units."""
    return image_like(prepared.reference, restore_volume(pred_slices, prepared, target_scale),
                      description)
