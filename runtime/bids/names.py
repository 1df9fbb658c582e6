"""BIDS names, and the BIDS files every mri2mri writer shares (descriptions, sidecars, URIs).

The one module that knows how a file is named: its stem and extension, its
entities (``sub-``, ``ses-``, ``run-``...) and suffix (the contrast it announces),
the partners beside it (JSON sidecar, a DWI's ``.bval``/``.bvec``). Discovery,
outputs, reports and registration all ask here, so the names an output keeps
from its input follow one rule.

The dataset files (descriptions, README, ``.bidsignore``, BIDS URIs) are shared by
the three places that describe a dataset (the simulated demo cohort, the IXI
import, the synthesis derivatives), so each passes the official validator
(``bids-validator-deno``) the same way.

pybids (``bids.layout.parse_file_entities``) would parse entities too, but it
brings SQLAlchemy, pandas and a database of the whole dataset into a base install
that is meant to stay torch-free and light (numpy, nibabel, onnxruntime, DIPY);
the few names mri2mri reads need one regular expression.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from nibabel.filename_parser import splitext_addext

from mri2mri.runtime import __version__
from mri2mri.runtime.core.atomic import atomic_path, write_json

BIDS_VERSION = "1.10.0"
#: Keys the BIDS entities of a file name are written in (the specification's order).
ENTITY_ORDER = ("sub", "ses", "task", "acq", "ce", "rec", "dir", "run", "mod", "echo", "flip",
                "inv", "mt", "part", "proc", "hemi", "space", "split", "recording", "chunk",
                "res", "den", "label", "desc")
#: The extensions of the images mri2mri reads and writes.
NIFTI_EXTENSIONS = (".nii", ".nii.gz")
_NAME = re.compile(r"^(?P<entities>(?:[a-zA-Z]+-[a-zA-Z0-9]+_)*)(?P<suffix>[a-zA-Z0-9]+)"
                   r"(?P<ext>(?:\.[a-z0-9]+)+)$")
#: A suffix `suffix_of` accepts; ``=`` lets a plain ``b=0.nii.gz`` announce its contrast.
_SUFFIX = re.compile(r"[A-Za-z0-9=]+")


def split_name(path: str | Path) -> tuple[str, str]:
    """``dir/sub-01_T1w.nii.gz`` -> (``sub-01_T1w``, ``.nii.gz``); ``x.nii`` -> (``x``, ``.nii``).

    nibabel's rule: the last extension, with a compression extension (``.gz``) kept.
    """
    stem, ext, compressed = splitext_addext(Path(path).name)
    return stem, ext + compressed


def partner(path: str | Path, ext: str) -> Path:
    """The file beside `path` with the same stem and extension `ext` (``.json``, ``.bval``)."""
    path = Path(path)
    return path.with_name(split_name(path)[0] + ext)


def sidecar_path(path: str | Path) -> Path:
    """An image's JSON sidecar: ``sub-01_T1w.nii.gz`` -> ``sub-01_T1w.json``."""
    return partner(path, ".json")


def bval_path(dwi: str | Path) -> Path | None:
    """The ``.bval`` beside a DWI file, or None when there is none."""
    candidate = partner(dwi, ".bval")
    return candidate if candidate.exists() else None


def bvec_path(dwi: str | Path) -> Path | None:
    """The ``.bvec`` beside a DWI file, or None when there is none."""
    candidate = partner(dwi, ".bvec")
    return candidate if candidate.exists() else None


def parse_name(name: str) -> tuple[dict[str, str], str, str]:
    """``sub-01_ses-1_run-2_T1w.nii.gz`` -> ({sub: 01, ses: 1, run: 2}, ``T1w``, ``.nii.gz``)."""
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"{name} is not a BIDS file name (key-value_..._suffix.ext)")
    pairs = [p.split("-", 1) for p in match.group("entities").rstrip("_").split("_") if p]
    return {k: v for k, v in pairs}, match.group("suffix"), match.group("ext")


def build_name(entities: Mapping[str, str], suffix: str, ext: str) -> str:
    """Inverse of `parse_name`; entities in the specification's order (unknown keys last)."""
    known = [k for k in ENTITY_ORDER if k in entities]
    other = [k for k in entities if k not in ENTITY_ORDER]
    parts = [f"{k}-{entities[k]}" for k in known + other]
    return "_".join([*parts, suffix]) + ext


def suffix_of(path: str | Path, extensions: Collection[str] | None = None) -> str | None:
    """The suffix a file name announces: the last ``_`` part of its stem (``T1w``).

    ``sub-1_T1w.nii.gz`` -> ``T1w``; a name without entities is its own suffix
    (``t1.nii`` -> ``t1``). None when the extension is not one of `extensions`
    (any, when None) or the part is not a plain word.
    """
    stem, ext = split_name(path)
    last = stem.rsplit("_", 1)[-1]
    if (extensions is not None and ext not in extensions) or not _SUFFIX.fullmatch(last):
        return None
    return last


def bids_uri(path: str | Path, root: str | Path, dataset: str = "") -> str:
    """A BIDS URI for a file of a dataset: ``bids:<dataset>:<path relative to its root>``.

    An empty `dataset` is the dataset holding the file that cites it; any other
    name must be a key of that dataset's ``DatasetLinks``.
    """
    relative = Path(path).resolve().relative_to(Path(root).resolve())
    return f"bids:{dataset}:{relative.as_posix()}"


def command_line(argv: Iterable[str] | None = None) -> str:
    """The command that is running, shell-quoted (recorded in ``GeneratedBy``)."""
    args = list(sys.argv if argv is None else argv)
    if args:
        args[0] = Path(args[0]).name
    return shlex.join(args)


def generated_by(name: str, description: str, command: str | None = None) -> dict[str, Any]:
    """One ``GeneratedBy`` entry: this package, its version and what it did."""
    entry: dict[str, Any] = {"Name": name, "Version": __version__, "Description": description,
                             "CodeURL": "https://github.com/mri2mri/mri2mri"}
    if command:
        entry["Description"] = f"{description} Command: {command}"
    return entry


def dataset_description(name: str, dataset_type: str, generated: list[dict[str, Any]], *,
                        authors: list[str] | None = None,
                        source_datasets: list[dict[str, str]] | None = None,
                        links: Mapping[str, str] | None = None,
                        **extra: Any) -> dict[str, Any]:
    """A ``dataset_description.json`` body with the keys the validator requires or recommends."""
    if dataset_type not in ("raw", "derivative"):
        raise ValueError(f"DatasetType must be raw or derivative, not {dataset_type!r}")
    description: dict[str, Any] = {
        "Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": dataset_type,
        "Authors": authors or ["mri2mri developers"], "GeneratedBy": generated,
    }
    if source_datasets:
        description["SourceDatasets"] = source_datasets
    if links:
        description["DatasetLinks"] = dict(links)
    description.update(extra)
    return description


def write_dataset_files(root: str | Path, description: Mapping[str, Any], *,
                        readme: str, ignore: Iterable[str] = ()) -> None:
    """``dataset_description.json``, ``README.md`` and, for non-BIDS extras, ``.bidsignore``.

    `ignore` lists files or folders that are useful to people (previews, QC
    pictures, HTML reports, split files) but not part of the BIDS specification.
    """
    root = Path(root)
    write_json(root / "dataset_description.json", dict(description))
    with atomic_path(root / "README.md", overwrite=True) as tmp:
        tmp.write_text(readme.rstrip() + "\n")
    patterns = list(dict.fromkeys(ignore))
    if patterns:
        with atomic_path(root / ".bidsignore", overwrite=True) as tmp:
            tmp.write_text("\n".join(patterns) + "\n")


def dataset_name(root: str | Path) -> str:
    """A dataset's ``Name`` from its description, else its folder's name (never a full path).

    What a model card says it was trained on: a local path means nothing elsewhere and
    may reveal a user's directory layout.
    """
    root = Path(root)
    try:
        name = json.loads((root / "dataset_description.json").read_text()).get("Name")
    except (OSError, json.JSONDecodeError, AttributeError):
        name = None
    return str(name) if name else root.resolve().name
