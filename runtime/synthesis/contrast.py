"""Is the input the model's source contrast at all? A contrast figure on the network's features.

A model trained with contrast randomisation (random monotone intensity curves) takes
any scanner's grey levels of its source contrast, so neither the intensity histogram nor
the distance of its features from its training subjects' says whether it can translate a
scan: on the four real scans where the starter models beat a look-up table both warned,
and a T2w given as a T1w scored no farther than those scans. What the randomisation keeps
is the order of the tissues (a T1w's white matter above its grey matter above its CSF);
a wrong contrast reverses it, and the network's bottleneck sees that.

Definition (version `DEFINITION_VERSION`; training and runtime call these functions):

- vectors: the feature check's (`mri2mri.runtime.synthesis.features.measure`: per slice,
  each bottleneck channel's mean over the foreground), averaged over the scan's slices;
- a direction in that space (`fit`): the shrinkage linear discriminant between two groups
  of the model's reference subjects, drawn with its training augmentation and at voxel
  sizes from 1 mm to the cohort's (`mri2mri.train.ood_reference`): their source contrast
  ("right"), and their target contrast given in its place ("wrong": the one contrast
  every training subject has that the model must not take as its source);
- the **figure** of a scan: ``(1 - p) / 2`` where p is its projection on that direction,
  scaled so that the right group's mean is p = +1 and the wrong group's p = -1: 0 is like
  the source contrast, 1 like the wrong one;
- threshold `THRESHOLD` (0.5): the scan is nearer the wrong contrast than the right one.

The reference (``ModelMetadata.ood["contrast"]``, `reference`) holds the direction, its
offset and scale, each reference scan's leave-one-subject-out figure of both groups, and
the threshold. No torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mri2mri.runtime.synthesis.features import OUTPUT_NAME, usable_reference
from mri2mri.runtime.synthesis.verdict import FigureVerdict

#: Bumped when the definition changes: a reference of another version is not compared.
DEFINITION_VERSION = 1
#: Key of this check in `ModelMetadata.ood`.
KEY = "contrast"
#: Flag a figure above this: nearer the wrong contrast's mean than the right one's.
THRESHOLD = 0.5
#: Shrinkage of the within-group covariance towards its mean variance (0: plain LDA, 1:
#: the difference of the group means, channel by channel): there are fewer reference scans
#: than channels.
SHRINK = 0.9


@dataclass(frozen=True)
class Direction:
    """A scan's projection ``(mean vector . weights - offset) / scale``."""

    weights: np.ndarray
    offset: float
    scale: float

    def project(self, scan: np.ndarray) -> float:
        """p of one scan's vectors (M, C): +1 the right group's mean, -1 the wrong one's."""
        mean = np.asarray(scan, dtype=np.float64).mean(axis=0)
        return float((mean @ self.weights - self.offset) / self.scale)

    def figure(self, scan: np.ndarray) -> float:
        return (1.0 - self.project(scan)) / 2.0


def fit(right: Sequence[np.ndarray], wrong: Sequence[np.ndarray],
        shrink: float = SHRINK) -> Direction:
    """The direction between two groups of scans (each scan (M, C) vectors)."""
    a = np.array([np.asarray(s, dtype=np.float64).mean(axis=0) for s in right])
    b = np.array([np.asarray(s, dtype=np.float64).mean(axis=0) for s in wrong])
    if len(a) < 2 or len(b) < 2:
        raise ValueError("a contrast direction needs at least two scans of each group")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    within = np.concatenate([a - mean_a, b - mean_b])
    sd = within.std(axis=0)
    sd = np.maximum(sd, max(1e-6, 0.01 * float(np.median(sd))))
    cov = np.cov(within / sd, rowvar=False)
    cov = (1.0 - shrink) * cov + shrink * np.eye(len(cov)) * np.trace(cov) / len(cov)
    weights = np.linalg.solve(cov, (mean_a - mean_b) / sd) / sd
    half = float((mean_a - mean_b) @ weights) / 2.0
    if not half > 0:
        raise ValueError("the two groups of reference scans do not differ")
    return Direction(weights, float((mean_a + mean_b) @ weights) / 2.0, half)


def _round(values: Sequence[float] | np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def leave_one_out(right: Sequence[Sequence[np.ndarray]], wrong: Sequence[Sequence[np.ndarray]],
                  shrink: float = SHRINK) -> tuple[list[float], list[float]]:
    """Each reference scan's figure against the direction fitted without its subject.

    `right[i]` and `wrong[i]` are subject i's scans of each group.
    """
    found: tuple[list[float], list[float]] = ([], [])
    for i in range(len(right)):
        direction = fit([s for j, g in enumerate(right) if j != i for s in g],
                        [s for j, g in enumerate(wrong) if j != i for s in g], shrink)
        found[0].extend(direction.figure(s) for s in right[i])
        found[1].extend(direction.figure(s) for s in wrong[i])
    return found


def reference(right: Sequence[Sequence[np.ndarray]], others: Sequence[Sequence[np.ndarray]],
              *, wrong: str = "", **about: Any) -> dict[str, Any]:
    """What the model records (``ModelMetadata.ood["contrast"]``) from its reference
    subjects' scans of both groups (`right[i]`, `others[i]`: subject i's scans of its
    source contrast and of the `wrong` one, each (M, C) vectors; subjects with an empty
    group are left out); `about` is kept as is."""
    kept = [(r, w) for r, w in zip(right, others, strict=True)
            if any(len(s) for s in r) and any(len(s) for s in w)]
    if len(kept) < 3:
        raise ValueError("a contrast reference needs at least three subjects with both groups")
    right = [[s for s in r if len(s)] for r, _ in kept]
    others = [[s for s in w if len(s)] for _, w in kept]
    direction = fit([s for g in right for s in g], [s for g in others for s in g])
    loo_right, loo_wrong = leave_one_out(right, others)
    return {"version": DEFINITION_VERSION, "output": OUTPUT_NAME, "wrong": wrong,
            "subjects": len(kept),
            "scans": {"right": sum(map(len, right)), "wrong": sum(map(len, others))},
            **about, "shrink": SHRINK, "weights": _round(direction.weights),
            "offset": float(f"{direction.offset:.9g}"), "scale": float(f"{direction.scale:.9g}"),
            "leave_one_out": {"right": _round(loo_right), "wrong": _round(loo_wrong)},
            "threshold": THRESHOLD}


@dataclass
class Verdict(FigureVerdict):
    """The contrast check's verdict on one input (JSON-able with `as_dict`)."""

    LABEL = "contrast figure"
    DECIMALS = 3
    FLAGGED = "the network takes the input for another contrast than its source"
    HINT = " (a wrong contrast: check which image was given)"

    #: The contrast the reference's "wrong" group was (the model's target, given as source).
    wrong: str = ""


def judge(scan: np.ndarray | None, recorded: Mapping[str, Any]) -> Verdict:
    """The verdict on one scan's feature vectors (`features.measure`; None: the model has
    no feature output) against the model's `ModelMetadata.ood` record."""
    ref, why = usable_reference(scan, recorded, key=KEY, version=DEFINITION_VERSION,
                                vector="weights")
    if why:
        return Verdict(slices=0 if scan is None else len(scan), skipped=why)
    assert scan is not None
    direction = Direction(np.asarray(ref["weights"], dtype=np.float64), ref["offset"],
                          ref["scale"])
    value = round(direction.figure(scan), 6)
    return Verdict(flagged=value > ref["threshold"], figure=value, threshold=ref["threshold"],
                   slices=len(scan), wrong=str(ref.get("wrong", "")))
