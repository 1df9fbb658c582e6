"""Find what a model can be run on in a BIDS dataset: one unit per subject, session and run.

Unlike `mri2mri.data.cohort` (one image per contrast and subject, for
training), this keeps every acquisition: ``sub-01_ses-2_run-1_T1w`` and
``..._run-2_T1w`` are two units, and the output name carries their entities.
For a several-source model, the other sources are paired with the first one by
identical entities (``run-2`` with ``run-2``), or taken as is when a session
has only one image of that contrast.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mri2mri.runtime.bids.names import NIFTI_EXTENSIONS, bval_path, parse_name
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast

#: Where each contrast is found: (datatype folder, BIDS suffix).
PLACES = {"T1w": ("anat", "T1w"), "T2w": ("anat", "T2w"), "PDw": ("anat", "PDw"),
          "angio": ("anat", "angio"), "b0": ("dwi", "dwi")}
#: Entities an anatomical output may carry over from its first source.
ANAT_ENTITIES = ("sub", "ses", "acq", "ce", "rec", "run")


@dataclass(frozen=True)
class Unit:
    """One synthesis to run: the inputs (model order) and the entities of the output."""

    participant: str  # "sub-01"
    session: str | None  # "ses-1" or None
    entities: tuple[tuple[str, str], ...]  # output entities, without desc
    inputs: tuple[tuple[str, Path], ...]  # (contrast, file) in the model's source order
    bvals: Path | None = None

    @property
    def label(self) -> str:
        """``sub-01_ses-1_run-2``: how the unit is named in messages and reports."""
        return "_".join(f"{k}-{v}" for k, v in self.entities)


@dataclass
class Found:
    """Units to run, and the sessions that lack a source (reported, not run)."""

    units: list[Unit] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _strip(label: str, prefix: str) -> str:
    return label[len(prefix):] if label.startswith(prefix) else label


def _images(folder: Path, sources: list[str]) -> dict[str, list[tuple[dict[str, str], Path]]]:
    found: dict[str, list[tuple[dict[str, str], Path]]] = {c: [] for c in sources}
    for contrast in sources:
        datatype, suffix = PLACES[contrast]
        for path in sorted((folder / datatype).glob(f"*_{suffix}.nii*")):
            try:
                entities, got, ext = parse_name(path.name)
            except ValueError:
                continue
            if got != suffix or ext not in NIFTI_EXTENSIONS:
                continue
            if contrast == "b0" and bval_path(path) is None:
                continue  # a DWI without b-values cannot give a b=0 image
            found[contrast].append((entities, path))
    return found


def _pair(first: dict[str, str], candidates: list[tuple[dict[str, str], Path]]
          ) -> tuple[dict[str, str], Path] | None:
    same = [c for c in candidates if c[0] == first]
    if len(same) == 1:
        return same[0]
    return candidates[0] if len(candidates) == 1 else None


def find_units(root: str | Path, sources: list[str], participants: list[str] | None = None,
               sessions: list[str] | None = None) -> Found:
    """Every (subject, session, run) of `root` with all of `sources`, optionally filtered."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "dataset directory not found")
    sources = [canonical_contrast(s) for s in sources]
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    if not subjects:
        raise InputError(root, "no BIDS subjects (sub-*/) found")
    if participants:
        wanted = {f"sub-{_strip(p, 'sub-')}" for p in participants}
        unknown = sorted(wanted - {p.name for p in subjects})
        if unknown:
            raise InputError(root, f"no participant {', '.join(unknown)} in the dataset")
        subjects = [p for p in subjects if p.name in wanted]
    wanted_sessions = {f"ses-{_strip(s, 'ses-')}" for s in sessions} if sessions else None
    result = Found()
    seen_sessions: set[str] = set()
    for subject in subjects:
        folders = sorted(p for p in subject.glob("ses-*") if p.is_dir()) or [subject]
        for folder in folders:
            session = folder.name if folder is not subject else None
            if session:
                seen_sessions.add(session)
            if wanted_sessions is not None and session not in wanted_sessions:
                continue
            _add_units(result, subject.name, session, images=_images(folder, sources),
                       sources=sources)
    if wanted_sessions is not None and (unknown := sorted(wanted_sessions - seen_sessions)):
        raise InputError(root, f"no session {', '.join(unknown)} in the selected participants")
    return result


def _add_units(result: Found, participant: str, session: str | None, *,
               images: dict[str, list[tuple[dict[str, str], Path]]], sources: list[str]) -> None:
    where = participant + (f"_{session}" if session else "")
    firsts = images[sources[0]]
    if not firsts:
        result.missing.append(where)
        return
    for entities, path in firsts:
        chosen = [(sources[0], path)]
        bvals = bval_path(path) if sources[0] == "b0" else None
        for contrast in sources[1:]:
            match = _pair(entities, images[contrast])
            if match is None:
                break
            chosen.append((contrast, match[1]))
            if contrast == "b0":
                bvals = bval_path(match[1])
        else:
            kept = tuple((k, entities[k]) for k in ANAT_ENTITIES if k in entities)
            result.units.append(Unit(participant, session, kept, tuple(chosen), bvals))
            continue
        name = "_".join(f"{k}-{v}" for k, v in entities.items())
        result.missing.append(name)
