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
from mri2mri.runtime.slicing import PAD_VALUE, SliceGeometry, context_indices

from .augment import Transform

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
    """Foreground slices of the training subjects as (source, target) tensor pairs.

    With `context` K, each item's source holds the K slices on either side of the
    kept slice (taken from the whole subject volume with `context_indices`, so a
    neighbour may be a non-foreground slice, and edges repeat as at inference).
    `item` gives the augmentation hook's layout, (S, 2K+1, H, W) and (1, H, W);
    indexing gives network input (S * (2K+1), H, W), source-major as `stack_context`.
    """

    def __init__(self, subjects: Sequence[SubjectData], min_foreground: float = MIN_FOREGROUND,
                 context: int = 0) -> None:
        if not subjects:
            raise ValueError("no training subjects")
        height = max(s.prepared.slices.shape[2] for s in subjects)
        width = max(s.prepared.slices.shape[3] for s in subjects)
        self.context = context
        self.volumes = [_pad_to(s.prepared.slices, height, width) for s in subjects]
        self.targets = [_pad_to(s.target_slices, height, width) for s in subjects]
        self.index = [(i, int(z)) for i, s in enumerate(subjects)
                      for z in np.flatnonzero(s.foreground_fraction >= min_foreground)]
        if not self.index:
            raise ValueError("the training subjects have no foreground slices")

    def __len__(self) -> int:
        return len(self.index)

    def item(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Fresh arrays: source (S, 2K+1, H, W) and target (1, H, W), float32."""
        subject, z = self.index[index]
        volume = self.volumes[subject]
        stack = volume[context_indices(z, len(volume), self.context)]  # (2K+1, S, H, W)
        return np.ascontiguousarray(stack.transpose(1, 0, 2, 3)), self.targets[subject][z].copy()

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _as_input(*self.item(index))


def _as_input(source: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    channels = source.shape[0] * source.shape[1]
    return (torch.from_numpy(np.ascontiguousarray(source.reshape(channels, *source.shape[2:]))),
            torch.from_numpy(np.ascontiguousarray(target)))


class EpochItems(torch.utils.data.Dataset):
    """One epoch's items in order, augmented by `transform` seeded from (seed, epoch, position).

    Indexed by position in the epoch, so a worker process, a resumed run or a
    different worker count all draw the same augmentation for the same item.
    """

    def __init__(self, bank: SliceBank, order: Sequence[int], seed: int, epoch: int,
                 transform: Transform | None = None) -> None:
        self.bank, self.order, self.seed, self.epoch = bank, list(order), seed, epoch
        self.transform = transform

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        source, target = self.bank.item(self.order[position])
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, position])
            source, target = self.transform(source, target, rng)
        return _as_input(source, target)


def epoch_order(n_slices: int, n_samples: int, seed: int, epoch: int) -> list[int]:
    """Slice indices for one epoch: a function of (seed, epoch) only, so resuming repeats it.

    Whole permutations are concatenated until `n_samples` are drawn, so every slice
    is seen about equally often.
    """
    rng = np.random.default_rng([seed, epoch])
    reps = -(-n_samples // n_slices)
    order = np.concatenate([rng.permutation(n_slices) for _ in range(reps)])
    return order[:n_samples].tolist()
