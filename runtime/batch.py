"""Batch synthesis over a BIDS dataset, written as a BIDS derivative.

One failing subject (a corrupted file, a missing b-value file) must not stop a
cohort run: it is recorded and reported, and the caller exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .atomic import write_json
from .cohort import Cohort, Subject
from .errors import InputError
from .synthesizer import Synthesizer

#: Where a synthesized contrast goes: (BIDS datatype folder, filename suffix).
#: A b=0 image has no BIDS suffix of its own; it lives beside DWI data as ``_b0``.
DERIVATIVE_PLACES = {"T1w": ("anat", "T1w"), "T2w": ("anat", "T2w"), "PDw": ("anat", "PDw"),
                     "angio": ("anat", "angio"), "b0": ("dwi", "b0")}
DESC = "mri2mri"

#: progress(done, total, subject_id)
CohortProgress = Callable[[int, int, str], None]


@dataclass
class CohortSummary:
    """What a cohort run did, per subject id."""

    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{len(self.written)} written, {len(self.failed)} failed"
        if self.skipped:
            text += f", {len(self.skipped)} skipped (missing sources: {', '.join(self.skipped)})"
        return text


def derivative_path(out_dir: Path, subject_id: str, target: str) -> Path:
    """``OUT/sub-X/anat/sub-X_desc-mri2mri_T2w.nii.gz`` (BIDS-derivative naming)."""
    datatype, suffix = DERIVATIVE_PLACES[target]
    return out_dir / subject_id / datatype / f"{subject_id}_desc-{DESC}_{suffix}.nii.gz"


def write_dataset_description(out_dir: Path, synth: Synthesizer, source: Path) -> Path:
    """The derivative's ``dataset_description.json`` (DatasetType, GeneratedBy, sources)."""
    description = {
        "Name": f"mri2mri synthesis {synth.task}",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [{"Name": "mri2mri", "Version": __version__,
                         "Description": f"{synth.task} with model {synth.model_path.name}"}],
        "SourceDatasets": [{"URL": source.resolve().as_uri()}],
    }
    return write_json(out_dir / "dataset_description.json", description)


def _inputs_of(subject: Subject, synth: Synthesizer) -> dict[str, Path]:
    return {contrast: subject.path(contrast) for contrast in synth.sources}


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove folders this run created for a subject that then failed (only if empty)."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def synthesize_cohort(synth: Synthesizer, bids_dir: str | Path, out_dir: str | Path, *,
                      resample_to_first: bool = False, overwrite: bool = False,
                      progress: CohortProgress | None = None) -> CohortSummary:
    """Synthesize the model's target for every subject that has all its sources."""
    bids_dir, out_dir = Path(bids_dir), Path(out_dir)
    cohort = Cohort.discover(bids_dir)
    if not out_dir.parent.is_dir():
        raise InputError(out_dir, f"parent directory {out_dir.parent} does not exist")
    subjects = cohort.with_contrasts(*synth.sources)
    summary = CohortSummary(skipped=[s.id for s in cohort.subjects if s not in subjects])
    if not subjects:
        raise InputError(bids_dir, f"no subject has the model's sources "
                                   f"({', '.join(synth.sources)})")
    out_dir.mkdir(exist_ok=True)
    write_dataset_description(out_dir, synth, bids_dir)
    for done, subject in enumerate(subjects):
        if progress is not None:
            progress(done, len(subjects), subject.id)
        target = derivative_path(out_dir, subject.id, synth.target)
        bvals = subject.bvals if "b0" in synth.sources else None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            synth.synthesize_file(_inputs_of(subject, synth), target, bvals=bvals,
                                  resample_to_first=resample_to_first, overwrite=overwrite)
        except Exception as exc:  # noqa: BLE001 - one bad subject must not stop the cohort
            summary.failed[subject.id] = str(exc) if isinstance(exc, InputError) \
                else f"{type(exc).__name__}: {exc}"
            _remove_empty(target.parent, stop=out_dir)
        else:
            summary.written[subject.id] = target
    if progress is not None:
        progress(len(subjects), len(subjects), "done")
    return summary
