"""Distortion correction over a BIDS dataset, per participant: the BIDS-App mode of
`mri2mri-register --correct-distortion` (``BIDS_DIR OUTPUT_DIR participant``).

Each unit is a DWI (``dwi/*_dwi.nii.gz`` with its ``.bval``) and the T1w of the same
subject and session, found as the synthesis BIDS App finds its units
(`mri2mri.runtime.bids.inputs.find_units`). It is corrected by
`distortion_files.correct_distortion` into one derivative dataset, which stages a unit's
files and moves them into place together, the corrected series' sidecar last: as in the
synthesis BIDS App (`mri2mri.runtime.synthesis.batch.is_finished`), a unit counts as
finished when that sidecar exists, so a rerun skips it unless ``overwrite`` (and a run
killed at any moment is completed by the next one), and a finished unit another model
made is reported, never passed off as this model's.

A session without a DWI or a T1w is skipped with a note; a failing unit never stops the
others (it is reported and the command exits 1). The model is loaded once and checked,
and the dataset read, before any unit runs: bad input there writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mri2mri.runtime.bids.inputs import Unit, find_units
from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.synthesis.batch import CohortSummary, finished_status, is_finished
from mri2mri.runtime.synthesis.jobs import UnitResult

from .distortion import b0_model
from .distortion_files import correct_distortion, describe
from .distortion_outputs import layout_for

if TYPE_CHECKING:  # hints only: `b0_model` loads the session
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

#: A unit's sources, in `find_units`' terms: the DWI (a series with its .bval) and the T1w.
SOURCES = ["b0", "T1w"]
#: Why a session is skipped (`find_units` lists it as missing a source).
MISSING = "skipped: no DWI (dwi/*_dwi.nii.gz with its .bval) or no T1w (anat/*_T1w.nii.gz)"


def correct_dataset(bids_dir: str | Path, out_dir: str | Path, *, model: str | Path,
                    participants: list[str] | None = None, sessions: list[str] | None = None,
                    report: bool = True, overwrite: bool = False, device: str = "cpu",
                    threads: int | None = None, trt_cache: bool = True,
                    progress: Callable[[str], None] | None = None,
                    **options: object) -> CohortSummary:
    """Correct every selected unit of `bids_dir` into the derivative dataset `out_dir`.

    `participants`/`sessions`: labels (``01`` or ``sub-01``). `progress` gets one line per
    step of each unit, prefixed with the unit and its place (``sub-01 (1/2): ...``).
    `options` go to `correct_distortion` (phase_encoding, total_readout_time,
    registration_settings, field_settings).
    """
    bids_dir, out_dir = Path(bids_dir), Path(out_dir)
    if out_dir.resolve() == bids_dir.resolve():
        raise InputError(out_dir, "the output directory must not be the input dataset")
    found = find_units(bids_dir, SOURCES, participants, sessions)
    if not found.units:
        raise InputError(bids_dir, "no subject has both a DWI (dwi/*_dwi.nii.gz with its "
                                   ".bval) and a T1w")
    say = progress or (lambda _m: None)
    synth = b0_model(model, say, device=device, threads=threads, trt_cache=trt_cache)
    summary = CohortSummary(skipped=found.missing)
    for label in found.missing:
        say(f"{label}: {MISSING}")
    total = len(found.units)
    for n, unit in enumerate(found.units, 1):
        where = f"{unit.label} ({n}/{total})"
        result = correct_unit(synth, unit, out_dir, report=report, overwrite=overwrite,
                              progress=lambda m, where=where: say(f"{where}: {m}"), **options)
        summary.add(result)
        if result.status == "done":
            say(f"{where}: already done, skipped (--overwrite redoes it)")
        elif result.status == "failed":
            say(f"{where}: failed: {result.error}")
    return summary


def correct_unit(synth: Synthesizer, unit: Unit, out_dir: Path, *, report: bool,
                 overwrite: bool, progress: Callable[[str], None],
                 **options: object) -> UnitResult:
    """One unit: skipped when finished (by this model), else corrected; never raises for a
    bad input (the unit fails, with the file named, and none of its outputs appear)."""
    inputs = dict(unit.inputs)
    dwi, t1w = inputs["b0"], inputs["T1w"]
    output = layout_for(dwi, out_dir, unit.participant).series(".nii.gz")
    result = UnitResult(unit.label, unit.participant, output, "written",
                        inputs={"dwi": str(dwi), "T1w": str(t1w)})
    if is_finished(output) and not overwrite:
        result.status, result.error = finished_status(output, synth.model_sha256,
                                                      "DistortionCorrection", "ModelSha256")
        return result
    try:  # an unfinished unit's leftovers (a killed run's) are this run's to replace
        done = correct_distortion(dwi, t1w, out_dir, model=synth, subject=unit.participant,
                                  report=report, overwrite=True, progress=progress, **options)
    except Exception as exc:  # noqa: BLE001 - one bad unit must not stop the others
        result.status = "failed"
        result.error = str(exc) if isinstance(exc, InputError) \
            else f"{type(exc).__name__}: {exception_summary(exc)}"
        return result
    result.timings = dict(done.correction.clock.seconds)
    result.provider, result.execution = synth.provider_name, synth.execution_info()
    progress(f"corrected: {describe(done)}")
    return result


__all__ = ["correct_dataset", "correct_unit"]
