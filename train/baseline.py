"""The baseline a model has to beat: a learned voxel-wise intensity look-up table.

It maps normalised source intensity to the mean normalised target intensity seen
at that source intensity in the training subjects, ignoring all spatial context.
With several sources (many-to-one) it bins them jointly (a coarser grid per axis);
joint cells never seen in training fall back to the first source's 1D table.
It runs on the same prepared slices and is restored through the same path as the
network, so the comparison is like for like.

The fit streams: `LUTStats` holds per-bin counts and target sums (a few kB, or
BINS_JOINT ** C cells jointly), computed per subject when the slice cache is
built and added up, so fitting never holds more than one subject in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

LOW, HIGH = -1.0, 1.5  # normalised range covered; values outside are clipped to it
BINS_1D = 256
BINS_JOINT = 48


def _bin(values: np.ndarray, bins: int) -> np.ndarray:
    pos = (np.clip(values, LOW, HIGH) - LOW) / (HIGH - LOW) * bins
    return np.minimum(pos.astype(np.int64), bins - 1)


@dataclass
class LUTStats:
    """Sufficient statistics of the fit: per-bin voxel counts and target sums (float64)."""

    counts: np.ndarray  # (BINS_1D,)
    sums: np.ndarray
    joint_counts: np.ndarray | None  # (BINS_JOINT ** C,) or None for one source
    joint_sums: np.ndarray | None

    @classmethod
    def of(cls, sources: np.ndarray, target: np.ndarray) -> LUTStats:
        """Statistics of one subject: sources (Z, C, H, W), target (Z, 1, H, W)."""
        src = sources.transpose(1, 0, 2, 3).reshape(sources.shape[1], -1)
        tgt = target.reshape(-1).astype(np.float64)
        bins = _bin(src[0], BINS_1D)
        counts = np.bincount(bins, minlength=BINS_1D).astype(np.float64)
        sums = np.bincount(bins, weights=tgt, minlength=BINS_1D)
        del bins
        joint_counts = joint_sums = None
        if src.shape[0] > 1:
            size = BINS_JOINT ** src.shape[0]
            keys = np.ravel_multi_index(tuple(_bin(c, BINS_JOINT) for c in src),
                                        (BINS_JOINT,) * src.shape[0])
            joint_counts = np.bincount(keys, minlength=size).astype(np.float64)
            joint_sums = np.bincount(keys, weights=tgt, minlength=size)
        return cls(counts, sums, joint_counts, joint_sums)

    def __add__(self, other: LUTStats) -> LUTStats:
        def add(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
            return None if a is None or b is None else a + b

        return LUTStats(self.counts + other.counts, self.sums + other.sums,
                        add(self.joint_counts, other.joint_counts),
                        add(self.joint_sums, other.joint_sums))

    @staticmethod
    def total(stats: Iterable[LUTStats]) -> LUTStats:
        """The sum of per-subject statistics, added one at a time: an iterator of them is
        never held whole (joint tables of three sources are ~1.7 MB a subject)."""
        total = None
        for item in stats:
            total = item if total is None else total + item
        if total is None:
            raise ValueError("no subjects to fit the look-up table on")
        return total

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"counts": self.counts, "sums": self.sums}
        if self.joint_counts is not None and self.joint_sums is not None:
            arrays |= {"joint_counts": self.joint_counts, "joint_sums": self.joint_sums}
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> LUTStats:
        return cls(arrays["counts"], arrays["sums"], arrays.get("joint_counts"),
                   arrays.get("joint_sums"))


def _means(counts: np.ndarray, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / counts, counts > 0


@dataclass
class IntensityLUT:
    """Fitted tables: `joint` (BINS_JOINT ** n_sources cells, NaN where unseen) and `table`."""

    table: np.ndarray  # (BINS_1D,) target mean per first-source bin, gaps interpolated
    joint: np.ndarray | None  # (BINS_JOINT ** C,) or None for one source

    @classmethod
    def fit(cls, sources: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> IntensityLUT:
        """Fit on prepared slices: sources (Z, C, H, W), targets (Z, 1, H, W), per subject."""
        return cls.from_stats(LUTStats.total(
            LUTStats.of(s, t) for s, t in zip(sources, targets, strict=True)))

    @classmethod
    def from_stats(cls, stats: LUTStats) -> IntensityLUT:
        """The tables from accumulated statistics (see `LUTStats`)."""
        means, seen = _means(stats.counts, stats.sums)
        centres = np.arange(BINS_1D)
        table = np.interp(centres, centres[seen], means[seen]).astype(np.float32)
        joint = None
        if stats.joint_counts is not None and stats.joint_sums is not None:
            joint, seen = _means(stats.joint_counts, stats.joint_sums)
            joint = np.where(seen, joint, np.nan).astype(np.float32)
        return cls(table, joint)

    def predict(self, slices: np.ndarray) -> np.ndarray:
        """(Z, C, H, W) prepared source slices -> (Z, 1, H, W) normalised target estimate."""
        out = self.table[_bin(slices[:, 0], BINS_1D)]
        if self.joint is not None:
            channels = slices.shape[1]
            keys = np.ravel_multi_index(tuple(_bin(slices[:, c], BINS_JOINT)
                                              for c in range(channels)), (BINS_JOINT,) * channels)
            joint = self.joint[keys]
            out = np.where(np.isnan(joint), out, joint)
        return out[:, None].astype(np.float32)

    def to_dict(self) -> dict[str, list[float] | None]:
        return {"table": self.table.tolist(),
                "joint": None if self.joint is None else self.joint.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> IntensityLUT:
        joint = data.get("joint")
        return cls(np.asarray(data["table"], np.float32),
                   None if joint is None else np.asarray(joint, np.float32))
