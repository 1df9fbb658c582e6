"""The baseline a model has to beat: a learned voxel-wise intensity look-up table.

It maps normalised source intensity to the mean normalised target intensity seen
at that source intensity in the training subjects, ignoring all spatial context.
With several sources (many-to-one) it bins them jointly (a coarser grid per axis);
joint cells never seen in training fall back to the first source's 1D table.
It runs on the same prepared slices and is restored through the same path as the
network, so the comparison is like for like.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LOW, HIGH = -1.0, 1.5  # normalised range covered; values outside are clipped to it
BINS_1D = 256
BINS_JOINT = 48


def _bin(values: np.ndarray, bins: int) -> np.ndarray:
    pos = (np.clip(values, LOW, HIGH) - LOW) / (HIGH - LOW) * bins
    return np.minimum(pos.astype(np.int64), bins - 1)


def _mean_table(keys: np.ndarray, target: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(keys, minlength=size).astype(np.float64)
    sums = np.bincount(keys, weights=target, minlength=size)
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
        src = np.concatenate([s.transpose(1, 0, 2, 3).reshape(s.shape[1], -1) for s in sources],
                             axis=1)
        tgt = np.concatenate([t.reshape(-1) for t in targets]).astype(np.float64)
        means, seen = _mean_table(_bin(src[0], BINS_1D), tgt, BINS_1D)
        centres = np.arange(BINS_1D)
        table = np.interp(centres, centres[seen], means[seen]).astype(np.float32)
        joint = None
        if src.shape[0] > 1:
            keys = np.ravel_multi_index(tuple(_bin(c, BINS_JOINT) for c in src),
                                        (BINS_JOINT,) * src.shape[0])
            joint, seen = _mean_table(keys, tgt, BINS_JOINT ** src.shape[0])
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
