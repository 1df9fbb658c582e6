"""What each starter model is made from: a simulated cohort and a training recipe.

Why kept as data in the repository: a shipped model must be rebuilt by anyone, to the
same scores, from one command (``mri2mri-starter build NAME``); its card records the
recipe it came from. Nothing here reads a real scan: the training data are simulated.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mri2mri.runtime.core.errors import InputError


@dataclass(frozen=True)
class Recipe:
    """One starter model: its task, the simulated cohort and the training options."""

    name: str
    sources: tuple[str, ...]
    target: str
    summary: str
    #: The simulated cohort (`mri2mri.data.simulate.demo_cohort.generate_cohort`).
    subjects: int = 12
    resolution: float = 2.0
    seed: int = 0
    variety: str = "starter"
    #: Skull and scalp around the brain (`generate_cohort(head=True)`): for inputs that
    #: keep them (a T1w as acquired); the DWI's fat is suppressed, as a scanner's is.
    head: bool = False
    #: False: the DWI without its susceptibility displacement (an undistorted spin-echo
    #: b=0, on its own grid), so that a b=0 model learns geometry-preserving pairs.
    dwi_distortion: bool = True
    #: `TrainConfig` fields; the cohort is simulated, so no extra simulated prior.
    train: dict[str, Any] = field(default_factory=dict)

    @property
    def has_b0(self) -> bool:
        return "b0" in (*self.sources, self.target)

    def images(self) -> tuple[str, ...]:
        """The images the cohort needs (the simulator's names: dwi for b0)."""
        return tuple(sorted({"dwi" if c == "b0" else c for c in (*self.sources, self.target)}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Training options shared by the anatomical starters: the default recipe's budget
#: (12 epochs of 600 slices), contrast randomisation of the sources, one CPU thread so
#: that a rebuild gives the same numbers on any machine.
ANATOMICAL = {"epochs": 12, "slices_per_epoch": 600, "augment": "strong,randomize=0.7",
              "simulated_subjects": 0, "threads": 1, "workers": 0}

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    # variety lesions only: measured ahead of none (mean +0.26 dB), of lesions with skull
    # stripping (+0.22) and of the starter preset (+0.74) on the real pairs (docs/training.md).
    Recipe("T1w-to-T2w", ("T1w",), "T2w",
           "T2w from a T1w; trained on simulated brains only (IXI protocols, brains with and "
           "without tumour/oedema lesions)",
           variety="lesions=0.6", train=ANATOMICAL),
    # lesions only here too: mean +0.23 dB over starter on the real pairs (docs/training.md).
    Recipe("T2w-to-T1w", ("T2w",), "T1w",
           "T1w from a T2w; trained on simulated brains only (IXI protocols, brains with and "
           "without tumour/oedema lesions)", variety="lesions=0.6", train=ANATOMICAL),
    Recipe("T1w-to-PDw", ("T1w",), "PDw",
           "PDw from a T1w; trained on simulated brains only (random scanners, lesions, "
           "skull stripping)", train=ANATOMICAL),
    # The b=0 starters: heads (users give a T1w with skull and scalp), a fat-suppressed,
    # undistorted spin-echo b=0. Scored on real anatomy with a pseudo-DWI folder as --real
    # (`mri2mri-data pseudo-dwi REAL OUT --no-distortion`: a b=0 simulated from each T2w).
    Recipe("T1w-to-b0", ("T1w",), "b0",
           "undistorted spin-echo b=0 from a T1w, for distortion correction without a field "
           "map (mri2mri-register --correct-distortion); trained on simulated heads only",
           head=True, dwi_distortion=False, train=ANATOMICAL),
    Recipe("b0-to-T1w", ("b0",), "T1w",
           "T1w from a b=0 (the mean b=0 of a DWI), for registering a DWI through a "
           "synthesized T1w (mri2mri-register --via); trained on simulated heads only",
           head=True, dwi_distortion=False, train=ANATOMICAL),
)}


def recipe(name: str) -> Recipe:
    """The recipe called `name`; a one-line error listing the known ones otherwise."""
    if name not in RECIPES:
        raise InputError(None, f"no starter recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]
