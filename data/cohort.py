"""Discover a BIDS-like cohort and split it into train/validation/test subjects.

Layout read (what `mri2mri-data` writes)::

    DIR/sub-<id>/anat/sub-<id>_T1w.nii.gz    (also _T2w, _PDw, _angio)
    DIR/sub-<id>/dwi/sub-<id>_dwi.nii.gz     with sub-<id>_dwi.bval (and .bvec)
    DIR/splits.json       optional: {"train": [...], "validation": [...], "test": [...]}

The ``b0`` contrast of a subject is the mean of its DWI's b=0 volumes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.bids.names import NIFTI_EXTENSIONS, bval_path, parse_name
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.nifti import load_volume

SPLITS = ("train", "validation", "test")
SPLIT_FILE = "splits.json"
#: The BIDS suffixes read in each datatype folder.
_SUFFIXES = {"anat": ("T1w", "T2w", "PDw", "angio"), "dwi": ("dwi",)}


@dataclass
class Subject:
    """One subject's image files, by canonical contrast name."""

    id: str
    files: dict[str, Path] = field(default_factory=dict)
    bvals: Path | None = None

    @property
    def contrasts(self) -> list[str]:
        return sorted(self.files)

    def has(self, *contrasts: str) -> bool:
        return all(canonical_contrast(c) in self.files for c in contrasts)

    def path(self, contrast: str) -> Path:
        contrast = canonical_contrast(contrast)
        if contrast not in self.files:
            raise InputError(None, f"subject {self.id} has no {contrast} image "
                                   f"(it has {', '.join(self.contrasts) or 'none'})")
        return self.files[contrast]

    def load(self, contrast: str) -> nib.Nifti1Image:
        """Load one contrast as a validated 3D float image (b0: mean of the b=0 volumes)."""
        contrast = canonical_contrast(contrast)
        return load_volume(self.path(contrast), self.bvals if contrast == "b0" else None)


def _image_of(path: Path) -> tuple[str, str] | None:
    """(``sub-<id>``, contrast) of an image this reads, or None (other files, other names)."""
    try:
        entities, suffix, ext = parse_name(path.name)
    except ValueError:
        return None
    if next(iter(entities), None) != "sub" or ext not in NIFTI_EXTENSIONS:
        return None
    if suffix not in _SUFFIXES.get(path.parent.name, ()):
        return None
    return f"sub-{entities['sub']}", "b0" if suffix == "dwi" else suffix


@dataclass
class Cohort:
    """The subjects found under `root`, sorted by id."""

    root: Path
    subjects: list[Subject]

    @classmethod
    def discover(cls, root: str | Path) -> Cohort:
        root = Path(root)
        if not root.is_dir():
            raise InputError(root, "dataset directory not found")
        found: dict[str, Subject] = {}
        for path in sorted(root.glob("sub-*/**/*.nii*")):
            if "derivatives" in path.relative_to(root).parts:
                continue
            if (image := _image_of(path)) is None:
                continue
            subject_id, contrast = image
            bval = bval_path(path) if contrast == "b0" else None
            if contrast == "b0" and bval is None:
                continue  # a DWI without b-values cannot give a b=0 image
            sub = found.setdefault(subject_id, Subject(subject_id))
            if contrast not in sub.files:  # the first of several runs; b-values are its own
                sub.files[contrast] = path
                if contrast == "b0":
                    sub.bvals = bval
        if not found:
            raise InputError(root, "no BIDS subjects (sub-*/anat/*.nii.gz) found")
        return cls(root, [found[k] for k in sorted(found)])

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.subjects]

    def subject(self, subject_id: str) -> Subject:
        for s in self.subjects:
            if s.id == subject_id:
                return s
        raise InputError(self.root, f"no subject {subject_id}")

    def with_contrasts(self, *contrasts: str) -> list[Subject]:
        return [s for s in self.subjects if s.has(*contrasts)]

    def splits(self, seed: int = 0) -> dict[str, list[str]]:
        """Subject ids per split: from splits.json when present, else `make_splits`."""
        split_file = self.root / SPLIT_FILE
        if split_file.exists():
            try:
                data = json.loads(split_file.read_text())
                splits = {name: list(data.get(name, [])) for name in SPLITS}
            except (json.JSONDecodeError, AttributeError) as exc:
                raise InputError(split_file, f"invalid split file ({exc})") from None
            check_splits(splits)
            return {k: [i for i in v if i in set(self.ids)] for k, v in splits.items()}
        return make_splits(self.ids, seed=seed)

    def split_rule(self) -> str:
        """How `splits` chose the subjects, in words (recorded in the model card)."""
        if (self.root / SPLIT_FILE).exists():
            return f"from {SPLIT_FILE}"
        return split_rule(len(self.ids))

    def split(self, name: str, seed: int = 0) -> list[Subject]:
        if name == "all":
            return list(self.subjects)
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}, all")
        wanted = set(self.splits(seed)[name])
        return [s for s in self.subjects if s.id in wanted]


#: Below this many subjects no test subject is set aside: every subject but the
#: validation one trains (see `split_sizes`).
SMALL_COHORT = 5


def split_sizes(n: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
                ) -> tuple[int, int, int]:
    """Subjects per split: proportional, with at least one validation subject from 3 on.

    Why small cohorts differ: with 3 or 4 subjects a proportional split trains on 1 or 2,
    which a network memorises (measured on four real scanners: validation PSNR peaked
    at epoch 5 and fell); a held-out test subject is better made by the leave-one-out
    benchmark. So below `SMALL_COHORT` subjects: every subject but one validation
    subject trains, and none is set aside for testing. From `SMALL_COHORT` on: at least
    one validation and one test subject.
    """
    if n < 3:
        return n, 0, 0
    if n < SMALL_COHORT:
        return n - 1, 1, 0
    n_val = max(1, round(n * fractions[1]))
    n_test = max(1, round(n * fractions[2]))
    return n - n_val - n_test, n_val, n_test


def split_rule(n: int) -> str:
    """The rule `split_sizes` applied to `n` subjects, in words (for the model card)."""
    if n < 3:
        return "fewer than 3 subjects: all train, no validation"
    if n < SMALL_COHORT:
        return (f"small cohort (< {SMALL_COHORT} subjects): all but one train, "
                "one validates, none held out for testing")
    return "proportional (70, 15, 15 %), at least one validation and one test subject"


def make_splits(ids: list[str], seed: int = 0,
                sizes: tuple[int, int, int] | None = None) -> dict[str, list[str]]:
    """Deterministic subject-level split: the same ids and seed always give the same split."""
    ordered = sorted(set(ids))
    n_train, n_val, n_test = sizes or split_sizes(len(ordered))
    if n_train + n_val + n_test != len(ordered):
        raise ValueError(f"split sizes {n_train}+{n_val}+{n_test} != {len(ordered)} subjects")
    order = np.random.default_rng(seed).permutation(len(ordered))
    shuffled = [ordered[i] for i in order]
    return {
        "train": sorted(shuffled[:n_train]),
        "validation": sorted(shuffled[n_train:n_train + n_val]),
        "test": sorted(shuffled[n_train + n_val:]),
    }


def check_splits(splits: dict[str, list[str]]) -> None:
    """Raise if a subject appears in two splits."""
    seen: dict[str, str] = {}
    for name, ids in splits.items():
        for i in ids:
            if i in seen:
                raise ValueError(f"subject {i} is in both {seen[i]} and {name}")
            seen[i] = name
