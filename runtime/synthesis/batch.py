"""Batch synthesis over a BIDS dataset, written as a BIDS derivative (the BIDS-App mode).

Each unit (subject, session, run: `mri2mri.runtime.bids.inputs`) gives one NIfTI
and its JSON sidecar, both written atomically, the sidecar last: an output counts
as finished only when its sidecar exists, so a run killed at any moment is
completed by the next one and finished outputs are skipped (unless
``overwrite``). One failing unit never stops the others; it is reported and the
caller exits non-zero. Work runs in this process, in a local process pool
(``nprocs``), or on a running Dask cluster (``scheduler``), one task per
participant.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mri2mri.runtime.bids.inputs import Unit, find_units
from mri2mri.runtime.bids.names import (
    bids_uri,
    build_name,
    command_line,
    dataset_description,
    generated_by,
    sidecar_path,
    write_dataset_files,
)
from mri2mri.runtime.core.atomic import write_json
from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.core.parallel import process_pool
from mri2mri.runtime.engine.session import physical_cores
from mri2mri.runtime.models.registry import resolve_model
from mri2mri.runtime.qc.synthesis import write_reports
from mri2mri.runtime.synthesis.jobs import (
    RunOptions,
    UnitResult,
    ood_checks,
    report_params,
    run_record,
)
from mri2mri.runtime.synthesis.ood_checks import warnings_of
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

#: Where a synthesized contrast goes: (BIDS datatype folder, filename suffix).
#: A b=0 image has no BIDS suffix of its own; it lives beside DWI data as ``_b0``
#: (listed in the derivative's ``.bidsignore``).
DERIVATIVE_PLACES = {"T1w": ("anat", "T1w"), "T2w": ("anat", "T2w"), "PDw": ("anat", "PDw"),
                     "angio": ("anat", "angio"), "b0": ("dwi", "b0")}
DESC = "mri2mri"
#: The input dataset's name in the derivative's ``DatasetLinks`` (its BIDS URIs cite it).
RAW = "raw"

#: progress(done, total, label)
CohortProgress = Callable[[int, int, str], None]


@dataclass
class CohortSummary:
    """What a cohort run did, per unit label (``sub-01`` or ``sub-01_ses-2_run-1``)."""

    written: dict[str, Path] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    flagged: dict[str, str] = field(default_factory=dict)
    results: list[UnitResult] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)

    def describe(self) -> str:
        text = f"{len(self.written)} written, {len(self.failed)} failed"
        if self.done:
            text += f", {len(self.done)} already done (skipped; --overwrite redoes them)"
        if self.skipped:
            text += f", {len(self.skipped)} skipped (missing sources: {', '.join(self.skipped)})"
        if self.flagged:
            text += f", {len(self.flagged)} unlike the training data"
        return text

    def add(self, result: UnitResult) -> None:
        self.results.append(result)
        if result.status == "written":
            self.written[result.label] = result.output
        elif result.status == "done":
            self.done.append(result.label)
        else:
            self.failed[result.label] = result.error
        warnings = warnings_of(result.ood)
        if warnings:
            self.flagged[result.label] = "; ".join(warnings)


def derivative_path(out_dir: Path, unit: Unit | str, target: str) -> Path:
    """``OUT/sub-X[/ses-Y]/anat/sub-X[_ses-Y][_run-Z]_desc-mri2mri_T2w.nii.gz``."""
    if isinstance(unit, str):  # a bare subject id
        unit = Unit(unit, None, (("sub", unit.removeprefix("sub-")),), ())
    datatype, suffix = DERIVATIVE_PLACES[target]
    folder = out_dir / unit.participant
    if unit.session:
        folder = folder / unit.session
    name = build_name({**dict(unit.entities), "desc": DESC}, suffix, ".nii.gz")
    return folder / datatype / name


def is_finished(output: Path) -> bool:
    """Both files present: the sidecar is written last, so this survives a kill at any point."""
    return output.exists() and sidecar_path(output).exists()


def finished_status(output: Path, model_sha256: str, *sha_key: str) -> tuple[str, str]:
    """A finished output's status for a rerun: ("done", "") when the model whose SHA-256
    its sidecar holds under the keys `sha_key` is this one, else ("failed", why): another
    model's output is never passed off as this one's."""
    try:
        made_by: object = json.loads(sidecar_path(output).read_text())
        for key in sha_key:
            made_by = made_by[key]  # type: ignore[index]
    except (OSError, ValueError, KeyError, TypeError):
        made_by = ""
    if str(made_by) == model_sha256:
        return "done", ""
    return "failed", (f"{output}: exists, made by another model (sha256 "
                      f"{str(made_by)[:12] or 'unknown'}...); pass --overwrite to replace it")


def _remove_stale_temporaries(output: Path) -> None:
    """Temporary files a killed run (SIGKILL: no cleanup) left for this output."""
    for stale in output.parent.glob(f".{output.name.split('.')[0]}-*"):
        stale.unlink(missing_ok=True)


def _remove_empty(folder: Path, stop: Path) -> None:
    """Remove folders this run created for a unit that then failed (only if empty)."""
    while folder != stop and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


def run_unit(synth: Synthesizer, unit: Unit, options: RunOptions) -> UnitResult:
    """Synthesize one unit and write its NIfTI and sidecar; never raises for bad input."""
    out_dir = options.dataset[1]
    output = derivative_path(out_dir, unit, synth.target)
    result = UnitResult(unit.label, unit.participant, output, "written",
                        inputs={c: str(p) for c, p in unit.inputs})
    if is_finished(output) and not options.overwrite:
        result.status, result.error = finished_status(output, options.model_sha256, "Mri2mri",
                                                      "Model", "Sha256")
        return result
    checks = ood_checks(synth, options)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(output)
        timings = synth.synthesize_file(dict(unit.inputs), output, bvals=unit.bvals,
                                        resample_to_first=options.resample_to_first,
                                        overwrite=True, **checks.hooks)
        result.ood, result.timings = checks.as_dict(), timings.as_dict()
        result.provider, result.execution = synth.provider_name, synth.execution_info()
        write_json(sidecar_path(output), sidecar(synth, unit, options, result))
    except Exception as exc:  # noqa: BLE001 - one bad unit must not stop the cohort
        result.status = "failed"
        result.error = str(exc) if isinstance(exc, InputError) \
            else f"{type(exc).__name__}: {exception_summary(exc)}"
        if not sidecar_path(output).exists():
            output.unlink(missing_ok=True)
        _remove_empty(output.parent, stop=out_dir)
    return result


def sidecar(synth: Synthesizer, unit: Unit, options: RunOptions, result: UnitResult
            ) -> dict[str, Any]:
    """The output's JSON sidecar: its sources as BIDS URIs and how it was made."""
    meta, raw_dir = synth.meta, options.dataset[0]
    return {
        "Description": f"{meta.target} synthesized from {' + '.join(meta.sources)} by mri2mri "
                       "(a deep-learning estimate, not an acquired image)",
        "Sources": [bids_uri(path, raw_dir, RAW) for _, path in unit.inputs],
        # mri2mri does not remove the skull: the output covers what the input covers.
        "SkullStripped": False,
        "Mri2mri": run_record(synth, options, result),
    }


def write_derivative_description(out_dir: Path, synth: Synthesizer, raw_dir: Path,
                                 command: str) -> None:
    """The derivative's ``dataset_description.json`` (GeneratedBy with the command), README,
    and ``.bidsignore`` for the HTML reports."""
    raw_uri = raw_dir.resolve().as_uri()
    description = dataset_description(
        f"mri2mri synthesis {synth.task}", "derivative",
        [generated_by("mri2mri", f"{synth.task} with model {synth.model_path.name}.",
                      command=command)],
        source_datasets=[{"URL": raw_uri}], links={RAW: raw_uri})
    ignore = ["*.html", "*_b0.nii.gz", "*_b0.json"] if synth.target == "b0" else ["*.html"]
    write_dataset_files(out_dir, description, readme=(
        f"# mri2mri synthesis {synth.task}\n\nImages synthesized by mri2mri "
        f"({synth.task}, model {synth.model_path.name}) from the dataset at {raw_uri}. Each "
        "image's JSON sidecar names its sources, the model (file name and SHA-256), the "
        "package version, the execution provider and whether the input was unlike the "
        "model's training data. `sub-<label>.html` are the QC reports, `index.html` the "
        "group index (listed in .bidsignore)."), ignore=ignore)


# -- execution: here, in a local process pool, or on a Dask cluster -----------------------

_WORKER: Synthesizer | None = None


def _synthesizer(options: RunOptions) -> Synthesizer:
    return Synthesizer(options.model, device=options.device, threads=options.threads,
                       batch_size=options.batch_size, trt_cache=options.trt_cache)


def _init_worker(options: RunOptions) -> None:
    global _WORKER
    _WORKER = _synthesizer(options)


def _pool_unit(unit: Unit, options: RunOptions) -> UnitResult:
    assert _WORKER is not None, "worker not initialised"
    return run_unit(_WORKER, unit, options)


def participant_task(units: list[Unit], options: RunOptions) -> list[UnitResult]:
    """One participant's units with a session of its own: a Dask task (or a job-array job)."""
    synth = _synthesizer(options)
    return [run_unit(synth, u, options) for u in units]


def _failed(unit: Unit, options: RunOptions, target: str, exc: BaseException) -> UnitResult:
    output = derivative_path(options.dataset[1], unit, target)
    return UnitResult(unit.label, unit.participant, output, "failed",
                      f"{type(exc).__name__}: {exception_summary(exc)}")


def synthesize_dataset(model: str | Path, bids_dir: str | Path, out_dir: str | Path, *,
                       participants: list[str] | None = None,
                       sessions: list[str] | None = None, nprocs: int = 1,
                       omp_nthreads: int | None = None, scheduler: str | None = None,
                       device: str = "auto", batch_size: int = 8,
                       resample_to_first: bool = False, overwrite: bool = False,
                       report: bool = True, command: str | None = None,
                       trt_cache: bool = True,
                       progress: CohortProgress | None = None,
                       synth: Synthesizer | None = None) -> CohortSummary:
    """The BIDS App: synthesize every selected unit of `bids_dir` into the derivative `out_dir`.

    `model`: an ONNX file or a starter model's name (`mri2mri.runtime.models`).
    `run_dataset` with the options as arguments. `synth` (already loaded) is used for
    in-process work; workers load their own.
    """
    options = RunOptions(
        model=resolve_model(model), bids_dir=Path(bids_dir), out_dir=Path(out_dir),
        participants=tuple(participants or ()), sessions=tuple(sessions or ()), nprocs=nprocs,
        threads=omp_nthreads, scheduler=scheduler, device=device, batch_size=batch_size,
        resample_to_first=resample_to_first, overwrite=overwrite, report=report,
        command=command, trt_cache=trt_cache)
    return run_dataset(options, progress=progress, synth=synth)


def run_dataset(options: RunOptions, *, progress: CohortProgress | None = None,
                synth: Synthesizer | None = None) -> CohortSummary:
    """The BIDS App with its options bundled (what `mri2mri-run BIDS_DIR OUTPUT_DIR` calls)."""
    bids_dir, out_dir = options.dataset
    if options.nprocs < 1:
        raise InputError(None, "--nprocs must be at least 1")
    if not out_dir.parent.is_dir():
        raise InputError(out_dir, f"parent directory {out_dir.parent} does not exist")
    if out_dir.resolve() == bids_dir.resolve():
        raise InputError(out_dir, "the output directory must not be the input dataset")
    local = synth or _synthesizer(options)
    found = find_units(bids_dir, local.sources, list(options.participants) or None,
                       list(options.sessions) or None)
    summary = CohortSummary(skipped=found.missing)
    if not found.units:
        raise InputError(bids_dir, f"no subject has the model's sources "
                                   f"({', '.join(local.sources)})")
    options = replace(options, model_sha256=local.model_sha256, threads=_worker_threads(options),
                      command=options.command or command_line())
    out_dir.mkdir(exist_ok=True)
    write_derivative_description(out_dir, local, bids_dir, options.command)
    total = len(found.units)
    if progress is not None:
        progress(0, total, "starting")

    def collect(result: UnitResult) -> None:
        summary.add(result)
        if progress is not None:
            progress(len(summary.results), total, result.label)

    started = time.perf_counter()
    _run_units(found.units, options, local, collect)
    if options.wants_report():
        params = report_params(options, time.perf_counter() - started)
        summary.reports = write_reports(out_dir, local.meta, summary.results, params)
    return summary


def _worker_threads(options: RunOptions) -> int | None:
    """Threads per model session: as asked, else the cores split between local workers."""
    if options.threads is None and options.nprocs > 1 and not options.scheduler:
        return max(1, physical_cores() // options.nprocs)
    return options.threads


def _run_units(units: list[Unit], options: RunOptions, local: Synthesizer,
               collect: Callable[[UnitResult], None]) -> None:
    """Here, in a local process pool, or on a Dask cluster."""
    if options.scheduler:
        _run_dask(units, options, local.target, collect)
    elif options.nprocs > 1 and len(units) > 1:
        _run_pool(units, options, local.target, collect)
    else:
        for unit in units:
            collect(run_unit(local, unit, options))


def _run_pool(units: list[Unit], options: RunOptions, target: str,
              collect: Callable[[UnitResult], None]) -> None:
    # The project's start method (mri2mri.runtime.core.parallel): never fork a process that
    # holds onnxruntime thread pools. Each worker loads the model once (initializer).
    pool = process_pool(min(options.nprocs, len(units)), initializer=_init_worker,
                        initargs=(options,))
    try:
        futures = {pool.submit(_pool_unit, u, options): u for u in units}
        for future in as_completed(futures):
            try:
                collect(future.result())
            except Exception as exc:  # noqa: BLE001 - a worker that died (e.g. bad model)
                collect(_failed(futures[future], options, target, exc))
    except BaseException:
        # Interrupted (SIGTERM, Ctrl-C): start nothing new; running units finish atomically.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def _run_dask(units: list[Unit], options: RunOptions, target: str,
              collect: Callable[[UnitResult], None]) -> None:
    try:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed
    except ImportError:
        raise InputError(None, "--scheduler needs dask.distributed "
                               "(pip install 'dask[distributed]')") from None
    by_participant: dict[str, list[Unit]] = {}
    for unit in units:
        by_participant.setdefault(unit.participant, []).append(unit)
    with Client(options.scheduler) as client:
        futures = {client.submit(participant_task, group, options,
                                 key=f"mri2mri-run-{pid}-{options.model_sha256[:12]}",
                                 pure=False): group
                   for pid, group in by_participant.items()}
        for future in dask_completed(list(futures)):
            try:
                for result in future.result():
                    collect(result)
            except Exception as exc:  # noqa: BLE001 - a lost worker fails its participant only
                for unit in futures[future]:
                    collect(_failed(unit, options, target, exc))


def synthesize_cohort(synth: Synthesizer, bids_dir: str | Path, out_dir: str | Path, *,
                      resample_to_first: bool = False, overwrite: bool = False,
                      progress: CohortProgress | None = None, report: bool = False
                      ) -> CohortSummary:
    """In-process batch mode with an already loaded model (the Python API of ``--bids``)."""
    return synthesize_dataset(synth.model_path, bids_dir, out_dir, synth=synth,
                              resample_to_first=resample_to_first, overwrite=overwrite,
                              progress=progress, report=report)


__all__ = ["CohortSummary", "RunOptions", "UnitResult", "derivative_path", "is_finished",
           "ood_checks", "participant_task", "run_dataset", "run_unit", "sidecar_path",
           "synthesize_cohort", "synthesize_dataset"]
