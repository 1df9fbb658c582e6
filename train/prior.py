"""The simulated anatomy prior: simulated subjects added to every run's training subjects.

Why: trained on a few real scanners, the network learns their intensities and loses to
a look-up table on a scanner it never saw (docs/training.md, "Leave-one-out on real
scans"); networks trained on the simulated cohort with contrast randomisation did better
there.
So each run also trains on `TrainConfig.simulated_subjects` subjects of the demo
simulator (MNI152 anatomy, deformed per subject), imaged at the cohort's own voxel
size and augmented with `TrainConfig.simulated_augment` (contrast randomisation: no
single set of simulated tissue values can be learnt as the truth). The user's
subjects alone define the normalisation, the LUT baseline, the validation and the
"unlike the training data" summary. With a large cohort the few simulated subjects
are a small share of the slices, so the prior fades where real data suffice.

The simulated cohort (only the images the task needs) is written once per (voxel size,
subjects, seed, images) under the run's slice-cache folder and reused by later runs and
resumes (it is deterministic).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from rich.console import Console

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime.core.errors import InputError

#: The contrasts the simulator images (anatomical, and b0 from its DWI).
SIMULATED_CONTRASTS = frozenset({"T1w", "T2w", "PDw", "b0"})
#: Seed of the simulated prior's cohort, offset by the run's seed.
PRIOR_SEED = 7919
#: Voxel sizes are rounded to this (mm) before simulating: nearby sizes share a cohort.
RESOLUTION_STEP_MM = 0.25


def prior_resolution(subjects: Sequence[Subject], contrast: str) -> float:
    """The training subjects' median finest voxel size of `contrast`, rounded (mm)."""
    sizes = [float(min(nib.load(str(s.path(contrast))).header.get_zooms()[:3]))
             for s in subjects]
    size = float(np.median(sizes))
    return max(RESOLUTION_STEP_MM, round(size / RESOLUTION_STEP_MM) * RESOLUTION_STEP_MM)


def supports(contrasts: Sequence[str]) -> bool:
    """Whether the simulator images every one of `contrasts`."""
    return set(contrasts) <= SIMULATED_CONTRASTS


def prior_subjects(count: int, *, seed: int, resolution: float, root: Path,
                   console: Console, contrasts: Sequence[str] = ("T1w", "T2w", "PDw", "b0"),
                   jobs: int = 1) -> list[Subject]:
    """`count` simulated subjects at `resolution` mm with (at least) `contrasts`, generated
    under `root` if missing: only the images the task needs, `jobs` at a time."""
    from mri2mri.data.simulate.demo_cohort import generate_cohort

    images = sorted({"dwi" if c == "b0" else c for c in contrasts})
    folder = root / (f"simulated-{resolution:g}mm-{count}-seed{PRIOR_SEED + seed}-"
                     + "-".join(images))
    if not (folder / "dataset_description.json").is_file():
        console.print(f"simulated prior: generating {count} subjects at {resolution:g} mm "
                      f"in {folder}")
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            generate_cohort(folder, subjects=count, seed=PRIOR_SEED + seed,
                            resolution=resolution, jobs=max(1, min(jobs, count)),
                            overwrite=True, contrasts=images)
        except InputError as exc:
            raise InputError(folder, f"could not simulate the prior's subjects: {exc}") \
                from None
    cohort = Cohort.discover(folder)
    # Distinct ids: a user's cohort may itself be a simulated one with the same labels.
    # The seed too: runs of other seeds may share a slice cache, whose entries go by id.
    return [Subject(id=f"prior{resolution:g}mm-s{seed}-{s.id}", files=dict(s.files),
                    bvals=s.bvals)
            for s in cohort.subjects]
