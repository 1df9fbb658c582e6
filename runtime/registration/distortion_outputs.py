"""Where distortion correction writes: a BIDS derivative dataset, staged then moved into place.

Why a BIDS derivative: the field map is only useful to other tools (SDCFlows, QSIPrep,
FSL) when its sidecar says what it is (Units Hz, B0FieldIdentifier, IntendedFor the raw
series) and its magnitude image sits beside it, as the official validator requires. Files
the derivative schema has no rule for yet (the corrected series' .bval/.bvec, the
displacement in mm, the transforms, the QC page) are listed in ``.bidsignore``.

Every file is written into a hidden staging folder first and renamed into place only when
all of them exist, so a failure leaves no partial output.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mri2mri.runtime.bids.names import (
    bids_uri,
    build_name,
    command_line,
    dataset_description,
    generated_by,
    parse_name,
    split_name,
    write_dataset_files,
)
from mri2mri.runtime.core.errors import InputError

DESC = "sdc"
#: The input dataset's name in the derivative's DatasetLinks (the BIDS URIs cite it).
RAW = "raw"
IGNORED = ("*_dwi.bval", "*_dwi.bvec", "*_displacement.nii.gz", "*_displacement.json",
           "*_xfm.txt", "*_sdc.html")
#: Entities a fieldmap may carry (BIDS: fmap files have no task, dir or echo of their own).
FIELDMAP_ENTITIES = ("sub", "ses", "acq", "run")
README = """# mri2mri distortion correction

Written by `mri2mri-register --correct-distortion`: each EPI series corrected for
susceptibility distortion through a b=0 image synthesized from the subject's T1w, the
field map that was estimated (Hz, with its magnitude), the displacement in mm, the rigid
T1w alignment, and a QC page. See the mri2mri documentation (docs/registration.md,
"Distortion correction") for what it corrects and what it does not.
"""


@dataclass(frozen=True)
class Layout:
    """The output names of one series."""

    root: Path
    entities: dict[str, str]
    suffix: str
    datatype: str

    def _path(self, folder: str, entities: Mapping[str, str], suffix: str, ext: str) -> Path:
        sub = [f"sub-{self.entities['sub']}"]
        if "ses" in self.entities:
            sub.append(f"ses-{self.entities['ses']}")
        return self.root.joinpath(*sub, folder, build_name(entities, suffix, ext))

    def series(self, ext: str) -> Path:
        """The corrected series (aligned with the T1w, on the input's grid)."""
        return self._path(self.datatype, {**self.entities, "space": "T1w", "desc": DESC},
                          self.suffix, ext)

    def fmap(self, suffix: str, ext: str) -> Path:
        """The field map (`fieldmap`), its magnitude (`magnitude`), the displacement."""
        kept = {k: v for k, v in self.entities.items() if k in FIELDMAP_ENTITIES}
        return self._path("fmap", {**kept, "desc": DESC}, suffix, ext)

    def prefix(self) -> str:
        """The series' entities as a name prefix (``sub-01_ses-1_acq-x``)."""
        return build_name(self.entities, "", "").rstrip("_")

    def transform(self, kind: str) -> Path:
        """The rigid T1w <-> series map: ``itk`` (ITK/ANTs text) or ``ras`` (4x4, RAS+ mm)."""
        desc = "" if kind == "itk" else "_desc-ras"
        name = f"{self.prefix()}_from-T1w_to-{self.suffix}_mode-image{desc}_xfm.txt"
        return self.series(".json").parent / name

    def report(self) -> Path:
        return self.root / f"{self.prefix()}_{self.suffix}_{DESC}.html"

    def b0_field_id(self) -> str:
        """The B0FieldIdentifier: letters, digits and underscores, unique per series."""
        return "mri2mri_sdc_" + "_".join(f"{k}{v}" for k, v in self.entities.items())


def layout_for(series: str | Path, root: str | Path, subject: str | None = None) -> Layout:
    """The names of `series`' outputs under `root`, from its BIDS entities (or `subject`)."""
    series = Path(series)
    try:
        entities, suffix, _ = parse_name(series.name)
    except ValueError:
        stem, _ = split_name(series)
        entities, suffix = {}, stem.rsplit("_", 1)[-1] if "_" in stem else "dwi"
    if subject is not None:
        entities["sub"] = subject.removeprefix("sub-")
    if "sub" not in entities:
        raise InputError(series, "not a BIDS name (sub-<label>_..._dwi.nii.gz): give the "
                                 "subject's label with --subject")
    folder = series.parent.name
    datatype = folder if folder in ("dwi", "func", "fmap", "perf") else "dwi"
    return Layout(Path(root), entities, suffix, datatype)


def dataset_root(path: Path) -> Path | None:
    """The BIDS dataset holding `path` (the nearest folder above with a description)."""
    for parent in path.resolve().parents:
        if (parent / "dataset_description.json").is_file():
            return parent
    return None


def raw_uri(path: str | Path) -> str | None:
    """``bids:raw:...`` for a file inside a BIDS dataset (None outside one)."""
    root = dataset_root(Path(path))
    return None if root is None else bids_uri(path, root, RAW)


def check_outputs(paths: list[Path], overwrite: bool) -> None:
    """Every output is free (or may be replaced), before any work."""
    for path in paths:
        if path.exists() and not overwrite:
            raise InputError(path, "output exists; pass --overwrite to replace it")


def describe_dataset(staging: Staging, series: Path) -> None:
    """The derivative's dataset_description.json, README.md and .bidsignore (staged).

    An existing derivative keeps its description; only missing `.bidsignore` lines are added.
    """
    root = staging.root
    ignore = root / ".bidsignore"
    if (root / "dataset_description.json").is_file():
        have = ignore.read_text().split() if ignore.is_file() else []
        missing = [p for p in IGNORED if p not in have]
        if missing:
            staging.path(ignore).write_text("\n".join([*have, *missing]) + "\n")
        return
    raw = dataset_root(series)
    links = {RAW: raw.resolve().as_uri()} if raw is not None else None
    description = dataset_description(
        "mri2mri distortion correction", "derivative",
        [generated_by("mri2mri", "mri2mri-register --correct-distortion: susceptibility "
                      "distortion correction through a b=0 synthesized from the T1w.",
                      command_line())],
        source_datasets=[{"URL": links[RAW]}] if links else None, links=links)
    folder = staging.dir / "dataset"
    folder.mkdir()
    write_dataset_files(folder, description, readme=README, ignore=IGNORED)
    for name in ("dataset_description.json", "README.md", ".bidsignore"):
        os.replace(folder / name, staging.path(root / name))


class Staging:
    """A hidden folder in the output folder; `commit` moves its files into place, all or none.

    An output folder that did not exist before is removed again when the work fails.
    """

    def __init__(self, root: Path) -> None:
        if not root.parent.is_dir():
            raise InputError(root, f"parent directory {root.parent} does not exist")
        self.root = root
        self.dir = root / f".mri2mri-sdc-{os.getpid()}.partial"
        self.pending: list[tuple[Path, Path]] = []
        self.created = False

    def __enter__(self) -> Staging:
        self.created = not self.root.exists()
        self.root.mkdir(exist_ok=True)
        self.dir.mkdir()
        return self

    def path(self, final: Path) -> Path:
        """Where to write `final` now (keeps its full suffix: nibabel picks the format by it)."""
        tmp = self.dir / f"{len(self.pending)}_{final.name}"
        self.pending.append((tmp, final))
        return tmp

    def commit(self, last: Path | None = None) -> list[Path]:
        """Move every file into place, `last` (the mark of a finished unit) after the rest."""
        ordered = sorted(self.pending, key=lambda pair: pair[1] == last)  # stable
        for tmp, final in ordered:
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        return [final for _, final in ordered]

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        if kind is not None and self.created:
            shutil.rmtree(self.root, ignore_errors=True)
