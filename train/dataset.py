"""Training items read from the slice cache, and the seeded per-epoch order that feeds them.

`CachedSlices` maps a key ``(epoch, position, index)`` to one training pair,
read through memory maps of the cached subject volumes (`mri2mri.train.cache`):
no slice is held in memory between items, so a worker's memory does not grow
with the cohort. `EpochSampler` yields those keys: each epoch's order is
`epoch_order(seed, epoch)`, a pure function, so a resumed run repeats it, and
the epoch reaches the dataset inside the key, also in persistent DataLoader
workers (which keep their own copy of the dataset and never see `set_epoch`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.slicing import PAD_VALUE, context_indices

from .augment import Transform
from .cache import CachedSubject


def _pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre an (..., h, w) array in (..., height, width), padding with the background value."""
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image
    top, left = (height - h) // 2, (width - w) // 2
    pad = [(0, 0)] * (image.ndim - 2) + [(top, height - h - top), (left, width - w - left)]
    return np.pad(image, pad, constant_values=PAD_VALUE)


class CachedSlices(torch.utils.data.Dataset):
    """The kept (foreground >= 2 %) slices of cached subjects, as (source, target) pairs.

    Item ``(epoch, position, index)``: ``index`` counts the kept slices of all
    subjects in order. The source stack holds, for each of the S sources, the
    slices ``context_indices(z, Z, context)`` of the subject's full cached volume
    (a neighbour may itself be below the foreground threshold; the edges repeat),
    and the target is slice ``z``. Both are centred in the largest slice size of
    the subjects (background padding), so any subjects batch together.

    Augmentation hook: with a `transform`, each item calls
    ``source, target = transform(source, target, rng)`` with ``source`` float32
    (S, 2K+1, H, W), ``target`` float32 (1, H, W) and
    ``rng = np.random.default_rng([seed, epoch, position])``: the same item of the
    same epoch always gets the same draw, whichever worker loads it, so resumed
    runs stay exact. It runs in the DataLoader workers; it must return arrays of
    the same shapes. `subject_transforms` gives each subject its own transform
    (None: none), e.g. the simulated prior's contrast randomisation. Afterwards the
    source is reshaped to (S * (2K+1), H, W), source-major like
    `mri2mri.runtime.imaging.slicing.stack_context`. With ``transform=None`` nothing
    is called and nothing is drawn.
    """

    def __init__(self, subjects: Sequence[CachedSubject], *, context: int = 0,
                 transform: Transform | None = None, seed: int = 0,
                 subject_transforms: Sequence[Transform | None] | None = None) -> None:
        if not subjects:
            raise ValueError("no training subjects")
        if context < 0:
            raise ValueError(f"context must be >= 0 (got {context})")
        if subject_transforms is not None and len(subject_transforms) != len(subjects):
            raise ValueError("subject_transforms needs one entry per subject")
        self.subjects = list(subjects)
        self.context = context
        #: Each subject's transform: `transform` for all, unless `subject_transforms` says.
        self.transforms = list(subject_transforms) if subject_transforms is not None \
            else [transform] * len(self.subjects)
        self.seed = seed
        self.height = max(s.height for s in self.subjects)
        self.width = max(s.width for s in self.subjects)
        kept = [s.keep for s in self.subjects]
        #: (subject number, slice) of every kept slice: two small int arrays, not the images.
        self._subject = np.concatenate([np.full(len(k), i, np.int32) for i, k in enumerate(kept)])
        self._slice = np.concatenate(kept).astype(np.int32)
        if len(self._slice) == 0:
            raise ValueError("the training subjects have no foreground slices")

    def __len__(self) -> int:
        return len(self._slice)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Kept slice `index`: source (S, 2K+1, H, W) and target (1, H, W), padded, float32."""
        subject = self.subjects[int(self._subject[index])]
        z = int(self._slice[index])
        try:
            stack = context_stacks(subject.array("sources"), [z], self.context)[0]
            target_slice = np.array(subject.array("target")[z], dtype=np.float32)
        except (OSError, ValueError) as exc:
            raise InputError(subject.path, f"cache entry became unreadable during the run "
                                           f"({exc}); rerun to rebuild it") from None
        source = stack.reshape(-1, 2 * self.context + 1, *stack.shape[1:])  # (S, 2K+1, H, W)
        return (_pad_to(source, self.height, self.width),
                _pad_to(target_slice, self.height, self.width))

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position, index = key
        source, target = self.read(index)
        transform = self.transforms[int(self._subject[index])]
        if transform is not None:
            rng = np.random.default_rng([self.seed, epoch, position])
            source, target = transform(source, target, rng)
        s, k, h, w = source.shape
        return (torch.from_numpy(np.ascontiguousarray(source, np.float32).reshape(s * k, h, w)),
                torch.from_numpy(np.ascontiguousarray(target, np.float32)))


def context_stacks(sources: np.ndarray, zs: Sequence[int], context: int) -> np.ndarray:
    """Network inputs at slices `zs` of a (Z, S, H, W) volume: (n, S * (2K+1), H, W) float32.

    The same channel order as `mri2mri.runtime.imaging.slicing.stack_context`, read slice by
    slice, so a memory-mapped volume is never loaded whole.
    """
    stacks = np.stack([np.asarray(sources[context_indices(int(z), len(sources), context)],
                                  dtype=np.float32) for z in zs])  # (n, 2K+1, S, H, W)
    n, k, s, h, w = stacks.shape
    return np.ascontiguousarray(stacks.transpose(0, 2, 1, 3, 4).reshape(n, s * k, h, w))


def epoch_order(n_slices: int, n_samples: int, seed: int, epoch: int) -> list[int]:
    """Slice indices for one epoch: a function of (seed, epoch) only, so resuming repeats it.

    Whole permutations are concatenated until `n_samples` are drawn, so every slice
    is seen about equally often.
    """
    rng = np.random.default_rng([seed, epoch])
    reps = -(-n_samples // n_slices)
    order = np.concatenate([rng.permutation(n_slices) for _ in range(reps)])
    return order[:n_samples].tolist()


class EpochSampler(torch.utils.data.Sampler):
    """Keys ``(epoch, position, index)`` of one epoch, this rank's share of each global batch.

    The epoch's order is `epoch_order`; step ``i`` of the epoch consumes positions
    ``i * batch .. (i + 1) * batch - 1`` of it (``batch`` = the global batch), and
    rank ``r`` of ``world`` takes the ``r``-th of ``world`` equal parts of every step.
    With several ranks a last, incomplete global batch is dropped (every rank must
    take part in every step); with one rank it is kept, as before. Call `set_epoch`
    before iterating.
    """

    def __init__(self, n_slices: int, n_samples: int, *, seed: int, batch_size: int,
                 rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"the batch size ({batch_size}) must be a multiple of the number "
                             f"of processes ({world})")
        self.n_slices, self.n_samples, self.seed = n_slices, n_samples, seed
        self.batch_size, self.rank, self.world = batch_size, rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def steps(self) -> int:
        """Optimizer steps per epoch."""
        if self.world == 1:
            return -(-self.n_samples // self.batch_size)
        return self.n_samples // self.batch_size

    @property
    def per_rank_batch(self) -> int:
        return self.batch_size // self.world

    def positions(self) -> list[int]:
        """The epoch positions this rank loads, in order."""
        if self.world == 1:
            return list(range(self.n_samples))
        part = self.per_rank_batch
        return [step * self.batch_size + self.rank * part + j
                for step in range(self.steps) for j in range(part)]

    def __len__(self) -> int:
        return len(self.positions())

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order = epoch_order(self.n_slices, self.n_samples, self.seed, self.epoch)
        for position in self.positions():
            yield self.epoch, position, order[position]
