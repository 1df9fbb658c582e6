"""Training and validation data, built only from the shared runtime preprocessing.

Every subject goes through `prepare_sources` / `prepare_target`, exactly the
path the runtime uses at inference, so the network is trained on what it will
be fed. Slices of all training subjects are kept in memory (a 2 mm cohort of a
dozen subjects is a few tens of MB) and padded to one common size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch

from mri2mri.runtime.cohort import Subject
from mri2mri.runtime.errors import InputError
from mri2mri.runtime.metadata import Normalisation
from mri2mri.runtime.preprocess import PreparedSources, prepare_sources, prepare_target
from mri2mri.runtime.resample import resample_to
from mri2mri.runtime.slicing import PAD_VALUE, SliceGeometry

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


def load_subject(subject: Subject, sources: Sequence[str], target: str,
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


def load_subjects(subjects: Sequence[Subject], sources: Sequence[str], target: str,
                  geometry: SliceGeometry, norm: Normalisation,
                  progress: Callable[[str], None] | None = None) -> list[SubjectData]:
    out = []
    for subject in subjects:
        if progress:
            progress(subject.id)
        out.append(load_subject(subject, sources, target, geometry, norm))
    return out


def _pad_to(slices: np.ndarray, height: int, width: int) -> np.ndarray:
    _, _, h, w = slices.shape
    top, left = (height - h) // 2, (width - w) // 2
    return np.pad(slices, ((0, 0), (0, 0), (top, height - h - top), (left, width - w - left)),
                  constant_values=PAD_VALUE)


class SliceBank(torch.utils.data.Dataset):
    """Foreground slices of the training subjects as (source, target) tensor pairs."""

    def __init__(self, subjects: Sequence[SubjectData], min_foreground: float = MIN_FOREGROUND
                 ) -> None:
        if not subjects:
            raise ValueError("no training subjects")
        height = max(s.prepared.slices.shape[2] for s in subjects)
        width = max(s.prepared.slices.shape[3] for s in subjects)
        sources, targets = [], []
        for s in subjects:
            keep = s.foreground_fraction >= min_foreground
            sources.append(_pad_to(s.prepared.slices[keep], height, width))
            targets.append(_pad_to(s.target_slices[keep], height, width))
        self.sources = torch.from_numpy(np.concatenate(sources))
        self.targets = torch.from_numpy(np.concatenate(targets))
        if len(self.sources) == 0:
            raise ValueError("the training subjects have no foreground slices")

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sources[index], self.targets[index]


def epoch_order(n_slices: int, n_samples: int, seed: int, epoch: int) -> list[int]:
    """Slice indices for one epoch: a function of (seed, epoch) only, so resuming repeats it.

    Whole permutations are concatenated until `n_samples` are drawn, so every slice
    is seen about equally often.
    """
    rng = np.random.default_rng([seed, epoch])
    reps = -(-n_samples // n_slices)
    order = np.concatenate([rng.permutation(n_slices) for _ in range(reps)])
    return order[:n_samples].tolist()
