"""One subject, network-ready: the runtime's own preprocessing, without torch.

Every subject goes through `prepare_sources` / `prepare_target`, exactly the
path the runtime uses at inference, so the network is trained on what it will
be fed. This module is torch-free so that the slice cache can be built in
light worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from mri2mri.data.cohort import Subject
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import PreparedSources, prepare_sources, prepare_target
from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.imaging.slicing import SliceGeometry, to_slices
from mri2mri.runtime.metadata import Normalisation

#: A slice is used for training when at least this fraction of its pixels is foreground.
MIN_FOREGROUND = 0.02


@dataclass
class SubjectData:
    """One subject, network-ready, plus the target volume that metrics compare against."""

    id: str
    prepared: PreparedSources
    target_slices: np.ndarray  # (Z, 1, H, W) normalised by the subject's own target scale
    target_scale: float
    target_volume: np.ndarray  # target on the first source's grid, original voxel order
    mask_volume: np.ndarray  # first source's foreground, original voxel order

    @property
    def foreground_fraction(self) -> np.ndarray:
        """Per-slice fraction of foreground pixels, (Z,)."""
        return self.prepared.mask.mean(axis=(0, 1))

    @property
    def mask_slices(self) -> np.ndarray:
        """The foreground mask as padded slices, (Z, H, W) uint8 (padding is background)."""
        mask = to_slices(self.prepared.mask.astype(np.float32), self.prepared.padding,
                         pad_value=0.0)
        return mask[:, 0].astype(np.uint8)


def load_subject(subject: Subject, sources: Sequence[str], target: str, *,
                 geometry: SliceGeometry, norm: Normalisation) -> SubjectData:
    """Prepare one subject's sources and target (resampled onto the first source's grid)."""
    images = [subject.load(c) for c in sources]
    names = [f"{subject.id} {c} ({subject.path(c).name})" for c in sources]
    prepared = prepare_sources(images, geometry, norm, names=names, resample_to_first=True)
    target_img = subject.load(target)
    on_grid: nib.Nifti1Image = resample_to(target_img, prepared.reference)
    try:
        target_slices, scale = prepare_target(on_grid, prepared, norm)
    except ValueError as exc:
        raise InputError(subject.path(target), str(exc)) from None
    return SubjectData(subject.id, prepared, target_slices, scale,
                       np.asarray(on_grid.dataobj, dtype=np.float32),
                       prepared.view.restore(prepared.mask))
