"""Does the model disagree with itself? A model-based out-of-distribution figure.

The histogram distance of `mri2mri.runtime.synthesis.ood` looks at the input only,
and missed real scanners (a phantom-trained model placed real scans under its
threshold while doing worse than a look-up table on them). This figure looks at the
model: on inputs like its training data a trained network gives (nearly) the same
answer when the input changes in ways that do not change the right answer, and it
stops doing so where it is guessing.

Definition (version `DEFINITION_VERSION`; training and runtime both call these
functions, so the reference and the run-time figure are the same thing):

- slices: up to `FIGURE_SLICES` axial slices that contain foreground, evenly spaced
  over them (`chosen_slices`); the network input stacks of those slices, as the
  synthesis feeds them (2.5D context included);
- perturbations (`PERTURBATIONS`): a left-right flip of the slices (the first in-plane
  axis, X of the RAS+ grid; the prediction is flipped back), and the normalised input
  scaled by gain 1.05 and 0.95 about the background level, ``x' = (x + 1) * g - 1``
  (padding and background stay at -1), the prediction taken as is;
- per perturbation: the RMS of (perturbed prediction - plain prediction) inside the
  first source's foreground, in the network's normalised target units;
- the figure: the mean over the perturbations.

Reference: the trainer measures the figure of the final network on each validation
subject and records it in the model (``ModelMetadata.ood["disagreement"]``, `reference`)
with a threshold of `THRESHOLD_MULTIPLE` times the largest validation figure.

No torch: `predict` is any function from (N, C, H, W) float32 inputs to (N, 1, H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mri2mri.runtime.imaging.preprocess import PreparedSources
from mri2mri.runtime.imaging.slicing import to_slices
from mri2mri.runtime.synthesis.verdict import FigureVerdict

#: (N, C, H, W) network inputs -> (N, 1, H, W) network outputs.
Predict = Callable[[np.ndarray], np.ndarray]

#: Bumped when the definition changes: a reference of another version is not compared.
DEFINITION_VERSION = 1
#: At most this many foreground slices are perturbed (bounds the cost: 3 x 16 slices).
FIGURE_SLICES = 16
#: Threshold = this multiple of the largest validation subject's figure. Provisional:
#: to be calibrated on real scans (docs/runtime.md, "The model disagrees with itself").
THRESHOLD_MULTIPLE = 2.0
#: Key of this check in `ModelMetadata.ood`.
KEY = "disagreement"


@dataclass(frozen=True)
class Perturbation:
    """A label-preserving change of the network input, and how to map its output back."""

    name: str
    flip: bool = False
    gain: float = 1.0

    def apply(self, stacks: np.ndarray) -> np.ndarray:
        """The perturbed (N, C, H, W) network input."""
        out = stacks[:, :, ::-1] if self.flip else stacks
        if self.gain != 1.0:
            out = (out + np.float32(1.0)) * np.float32(self.gain) - np.float32(1.0)
        return np.ascontiguousarray(out, dtype=np.float32)

    def undo(self, pred: np.ndarray) -> np.ndarray:
        """The perturbed input's prediction, back on the plain input's grid."""
        return np.ascontiguousarray(pred[:, :, ::-1]) if self.flip else pred


PERTURBATIONS = (Perturbation("flip-lr", flip=True), Perturbation("gain-1.05", gain=1.05),
                 Perturbation("gain-0.95", gain=0.95))


@dataclass
class Figure:
    """One volume's disagreement: the figure, and each perturbation's RMS."""

    value: float
    perturbations: dict[str, float] = field(default_factory=dict)
    slices: int = 0


def chosen_slices(mask: np.ndarray, count: int = FIGURE_SLICES) -> np.ndarray:
    """Indices of up to `count` slices of (Z, H, W) `mask` with foreground, evenly spaced."""
    found = np.flatnonzero(np.asarray(mask).reshape(len(mask), -1).any(axis=1))
    if len(found) <= count:
        return found
    return found[np.unique(np.round(np.linspace(0, len(found) - 1, count)).astype(int))]


def measure(predict: Predict, stacks: np.ndarray, mask: np.ndarray,
            plain: np.ndarray | None = None) -> Figure | None:
    """The figure of network inputs `stacks` (N, C, H, W) inside `mask` (N, H, W).

    `plain` is the network's output for `stacks` when already known (the synthesis
    has it), else it is predicted. None when the mask is empty.
    """
    inside = np.asarray(mask, dtype=bool)
    if not inside.any():
        return None
    stacks = np.ascontiguousarray(stacks, dtype=np.float32)
    base = (predict(stacks) if plain is None else plain)[:, 0].astype(np.float64)
    rms = {}
    for p in PERTURBATIONS:
        diff = p.undo(predict(p.apply(stacks)))[:, 0].astype(np.float64) - base
        rms[p.name] = round(float(np.sqrt(np.mean(diff[inside] ** 2))), 6)
    return Figure(round(float(np.mean(list(rms.values()))), 6), rms, len(stacks))


def checked_slices(prepared: PreparedSources) -> tuple[np.ndarray, np.ndarray]:
    """A synthesis's foreground as padded slices (Z, H, W) bool, and the `chosen_slices`
    of it: the slices the model-based checks look at (`mri2mri.runtime.synthesis.features`
    too)."""
    mask = to_slices(prepared.mask.astype(np.float32), prepared.padding, pad_value=0.0)[:, 0]
    return mask > 0.5, chosen_slices(mask)


def measure_prepared(predict: Predict, prepared: PreparedSources, stacks: np.ndarray, *,
                     prediction: np.ndarray | None = None,
                     checked: tuple[np.ndarray, np.ndarray] | None = None) -> Figure | None:
    """`measure` on a synthesis's own data: its prepared sources, every slice's network
    input (`stacks`), when done every slice's output (`prediction`), and when made its
    `checked_slices` (`checked`)."""
    mask, zs = checked if checked is not None else checked_slices(prepared)
    plain = None if prediction is None else prediction[zs]
    return measure(predict, stacks[zs], mask[zs], plain)


def reference(figures: Sequence[float], multiple: float = THRESHOLD_MULTIPLE) -> dict[str, Any]:
    """What the model records (``ModelMetadata.ood["disagreement"]``) from its validation
    subjects' figures: the figures, the threshold and how both were made."""
    if not figures:
        raise ValueError("no validation figures to make a disagreement reference from")
    return {"version": DEFINITION_VERSION, "validation": [round(float(f), 6) for f in figures],
            "multiple": multiple, "threshold": round(multiple * max(figures), 6),
            "slices": FIGURE_SLICES, "perturbations": [p.name for p in PERTURBATIONS]}


@dataclass
class Verdict(FigureVerdict):
    """The disagreement check's verdict on one input (JSON-able with `as_dict`)."""

    LABEL = "disagreement"
    DECIMALS = 4
    FLAGGED = "the model disagrees with itself under small input changes"

    perturbations: dict[str, float] = field(default_factory=dict)
    validation_max: float | None = None


def judge(figure: Figure | None, recorded: Mapping[str, Any],
          threshold: float | None = None) -> Verdict:
    """Compare `figure` with the model's `ModelMetadata.ood` record (`threshold` overrides it).

    Without a reference (a model trained before this existed) or a threshold, the
    figure is reported but not judged.
    """
    if figure is None:
        return Verdict(skipped="no foreground slices")
    verdict = Verdict(figure=figure.value, perturbations=figure.perturbations,
                      slices=figure.slices)
    ref = recorded.get(KEY) or {}
    if ref and ref.get("version") != DEFINITION_VERSION:
        ref = {}
        verdict.skipped = "the model's reference uses another definition"
    if ref:
        verdict.validation_max = max(ref["validation"])
    verdict.threshold = threshold if threshold is not None else ref.get("threshold")
    if verdict.threshold is None:
        verdict.skipped = verdict.skipped or "no reference recorded in the model"
        return verdict
    verdict.skipped = ""
    verdict.flagged = figure.value > verdict.threshold
    return verdict
