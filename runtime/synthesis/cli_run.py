"""`mri2mri-run`: synthesize a contrast with an exported ONNX model; no torch needed.

A thin typer layer over `mri2mri.runtime.synthesis.synthesizer.Synthesizer` (one subject)
and `mri2mri.runtime.synthesis.batch.run_dataset` (a BIDS dataset, called the BIDS-Apps
way: ``mri2mri-run BIDS_DIR OUTPUT_DIR participant --model M``). The options are bundled
once, right after parsing, into a `RunOptions` that `synthesize` passes down.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mri2mri.runtime.bids.names import command_line
from mri2mri.runtime.core.atomic import check_output_path
from mri2mri.runtime.core.cli_common import check_bids_app, expand_multi, run_app
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.engine.devices import check_device
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.models.registry import describe as describe_models
from mri2mri.runtime.models.registry import resolve_model
from mri2mri.runtime.qc.synthesis import write_unit_report
from mri2mri.runtime.synthesis.batch import CohortSummary, run_dataset
from mri2mri.runtime.synthesis.jobs import (
    RunOptions,
    UnitResult,
    ood_checks,
    report_params,
    run_record,
)
from mri2mri.runtime.synthesis.ood_checks import OodChecks
from mri2mri.runtime.synthesis.synthesizer import Synthesizer, Timings

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Synthesize an MRI contrast with an mri2mri ONNX model (no torch needed).")
_err = Console(stderr=True)


def parse_input(value: str) -> tuple[str | None, Path]:
    """``T1w=path`` -> (``T1w``, path); a bare path -> (None, path).

    The name is whatever precedes the first ``=`` that follows a known contrast
    name (``b=0=dwi.nii.gz`` works); a path that merely contains ``=`` stays a path.
    """
    for i, char in enumerate(value):
        if char != "=":
            continue
        name, path = value[:i], value[i + 1:]
        try:
            canonical_contrast(name)
        except ValueError:
            continue
        return name, Path(path)
    name, sep, path = value.partition("=")
    if sep and name and not any(c in name for c in "/\\.") and not Path(value).exists():
        raise InputError(path, f"unknown contrast {name!r} in --input {value}")
    return None, Path(value)


def _inputs(values: list[str]) -> dict[str, Path] | list[Path]:
    parsed = [parse_input(v) for v in values]
    named = [n for n, _ in parsed if n is not None]
    if named and len(named) != len(parsed):
        raise InputError(None, "name every --input (e.g. --input T1w=a.nii.gz) when "
                               "several are given, or none for a one-source model")
    return {n: p for n, p in parsed} if named else [p for _, p in parsed]


def _notify(message: str) -> None:
    _err.print(message, markup=False, highlight=False, soft_wrap=True)


def run_one(synth: Synthesizer, inputs: dict[str, Path] | list[Path], options: RunOptions
            ) -> None:
    """Synthesize one subject from files (`inputs`, parsed) and write ``options.output``
    (and its QC page when asked)."""
    if isinstance(inputs, list) and len(inputs) != 1 and len(synth.sources) == 1:
        raise InputError(None, f"model {synth.task} takes one input, got {len(inputs)}")
    output = options.output
    if output is None:
        raise InputError(None, "--input and --output are both needed")
    checks = ood_checks(synth, options)
    started = time.perf_counter()
    with progress_bar(console=_err) as bar:
        task = bar.add_task(f"{synth.task} ({synth.provider_name})", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, refresh=True)

        timings = synth.synthesize_file(inputs, output, bvals=options.bval,
                                        resample_to_first=options.resample_to_first,
                                        overwrite=options.overwrite, progress=show,
                                        **checks.hooks)
    first = next(iter(inputs.values())) if isinstance(inputs, dict) else inputs[0]
    for message in checks.warnings():
        _err.print(f"warning: {first}: {message}", markup=False, highlight=False,
                   soft_wrap=True)
    typer.echo(f"wrote {output} ({synth.task}, {timings.total:.1f} s)")
    if options.wants_report():
        report = _write_report(synth, inputs, options, checks=checks, timings=timings,
                               seconds=time.perf_counter() - started)
        typer.echo(f"report: {report}")
    if options.verbose:
        record = checks.as_dict()
        typer.echo(f"input: {record.get('message', 'not checked')}; "
                   f"{record['disagreement']['message']}; {record['features']['message']}")
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.as_dict().items())
        typer.echo(f"timings: {stages}")


def _write_report(synth: Synthesizer, inputs: dict[str, Path] | list[Path],
                  options: RunOptions, *, checks: OodChecks, timings: Timings,
                  seconds: float) -> Path:
    """One subject's QC page, the BIDS App's unit section; on failure the output goes too
    (no half-finished result: rerun with the same command)."""
    output, path = options.output, options.report_path
    assert output is not None and path is not None
    ordered = synth.order_inputs(inputs)
    result = UnitResult(
        output.name, "", output, "written",
        inputs={c: str(p) for c, p in zip(synth.sources, ordered, strict=True)},
        ood=checks.as_dict(), timings=timings.as_dict(), provider=synth.provider_name,
        execution=synth.execution_info(), bvals=str(options.bval or ""))
    params = report_params(replace(options, command=options.command or command_line()),
                           seconds)
    try:
        return write_unit_report(path, synth.meta, result,
                                 info=run_record(synth, options, result), params=params)
    except BaseException:
        output.unlink(missing_ok=True)
        raise


def _list_models(wanted: bool) -> None:
    """``--list-models``: print the starter models and stop (before any other option)."""
    if wanted:
        for line in describe_models():
            typer.echo(line)
        raise typer.Exit()


@app.command()
def run(
    bids_dir: Annotated[Path | None, typer.Argument(
        help="BIDS-App mode: the input BIDS dataset.", show_default=False)] = None,
    output_dir: Annotated[Path | None, typer.Argument(
        help="BIDS-App mode: the derivative dataset to write.", show_default=False)] = None,
    analysis_level: Annotated[str | None, typer.Argument(
        help="BIDS-App mode: participant (the only level; every run also updates the "
             "group index.html).", show_default=False)] = None,
    *,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="ONNX model file (mri2mri-export) or starter model name.")] = None,
    list_models: Annotated[bool, typer.Option(
        "--list-models", callback=_list_models, is_eager=True,
        help="List the starter models (names and one-line summaries) and exit.")] = False,
    inputs: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="Source image, CONTRAST=PATH (or PATH for a one-source model); "
                              "repeat for several sources.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Synthesized NIfTI to write.")] = None,
    bids: Annotated[Path | None, typer.Option(
        "--bids", help="Batch mode, same as the positional BIDS_DIR.")] = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", help="Batch mode, same as the positional OUTPUT_DIR.")] = None,
    participant_label: Annotated[list[str] | None, typer.Option(
        "--participant-label", help="Only these participants (01 or sub-01; several may "
                                    "follow the option).")] = None,
    session_label: Annotated[list[str] | None, typer.Option(
        "--session-label", help="Only these sessions (1 or ses-1).")] = None,
    nprocs: Annotated[int, typer.Option(
        "--nprocs", help="Batch mode: units synthesized in parallel (processes).")] = 1,
    scheduler: Annotated[str | None, typer.Option(
        "--scheduler", help="Batch mode: address of a running Dask scheduler; one task per "
                            "participant.")] = None,
    report: Annotated[bool | None, typer.Option(
        "--report/--no-report", show_default=False,
        help="HTML QC reports: a BIDS dataset writes them unless --no-report; one subject "
             "writes <output stem>_report.html beside the output with --report.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (TensorRT > CUDA > CPU, "
                                                         "whichever starts), tensorrt, cuda "
                                                         "or cpu.")] = "auto",
    no_trt_cache: Annotated[bool, typer.Option(
        "--no-trt-cache", help="Do not read or write TensorRT engines on disk (each run "
                               "rebuilds them).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Slices per run.")] = 8,
    threads: Annotated[int | None, typer.Option(
        "--threads", "--omp-nthreads",
        help="CPU threads per model session (default: physical cores).")] = None,
    bval: Annotated[Path | None, typer.Option(
        "--bval", help="b-values of a 4D DWI input: its b=0 volumes are averaged.")] = None,
    resample_to_first: Annotated[bool, typer.Option(
        "--resample-to-first", help="Resample the other inputs onto the first's grid.")] = False,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace existing outputs (batch mode: redo finished ones).")] = False,
    ood_check: Annotated[bool, typer.Option(
        "--ood-check/--no-ood-check",
        help="Measure whether the model disagrees with itself under small input changes (3 "
             "extra network passes over at most 16 slices) and whether its features are "
             "unlike its training subjects' (from the same slices, nearly free). The "
             "input-histogram comparison is always made.")] = True,
    ood_threshold: Annotated[float | None, typer.Option(
        "--ood-threshold", help="Flag a disagreement figure above this instead of the "
                                "model's recorded threshold.", show_default=False)] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print the provider (and "
                                          "why faster ones did not start) and timings.")] = False,
) -> None:
    """Synthesize the model's target contrast for one subject (--input ... --output FILE), or
    for a BIDS dataset: BIDS_DIR OUTPUT_DIR participant --model M (the BIDS-Apps convention)."""
    if model is None:
        raise InputError(None, "--model is needed (a file, or a name from --list-models)")
    device = check_device(device)
    if ood_threshold is not None and not ood_threshold > 0:
        raise InputError(None, f"--ood-threshold must be above 0 (got {ood_threshold})")
    bids, out_dir = _dataset_dirs(bids_dir, output_dir, analysis_level, bids=bids, out_dir=out_dir)
    synthesize(RunOptions(
        model=resolve_model(model), device=device, threads=threads, batch_size=batch_size,
        trt_cache=not no_trt_cache, resample_to_first=resample_to_first, overwrite=overwrite,
        verbose=verbose, inputs=tuple(inputs or ()), output=output, bval=bval, bids_dir=bids,
        out_dir=out_dir, participants=tuple(participant_label or ()),
        sessions=tuple(session_label or ()), nprocs=nprocs, scheduler=scheduler,
        report=report, ood_check=ood_check, ood_threshold=ood_threshold))


def _dataset_dirs(bids_dir: Path | None, output_dir: Path | None, analysis_level: str | None,
                  *, bids: Path | None, out_dir: Path | None) -> tuple[Path | None, Path | None]:
    """The dataset and derivative folders, given as BIDS_DIR OUTPUT_DIR participant or
    --bids/--out (not both)."""
    if bids_dir is None:
        return bids, out_dir
    if bids is not None or out_dir is not None:
        raise InputError(None, "give the dataset either as BIDS_DIR OUTPUT_DIR participant or "
                               "with --bids/--out, not both")
    check_bids_app(output_dir, analysis_level,
                   note=" (the group index.html is updated by every run)")
    return bids_dir, output_dir


def _is_single(options: RunOptions) -> bool:
    """One subject (--input ... --output) or a dataset; the other mode's options refused."""
    single = bool(options.inputs) or options.output is not None
    if single == (options.bids_dir is not None or options.out_dir is not None):
        raise InputError(None, "give either --input ... --output FILE, or BIDS_DIR OUTPUT_DIR "
                               "participant (or --bids DIR --out DIR)")
    if single and (not options.inputs or options.output is None):
        raise InputError(None, "--input and --output are both needed")
    if not single and (options.bids_dir is None or options.out_dir is None):
        raise InputError(None, "--bids and --out are both needed")
    if single and (options.participants or options.sessions or options.scheduler
                   or options.nprocs != 1):
        raise InputError(None, "--participant-label, --session-label, --nprocs and "
                               "--scheduler are for a BIDS dataset, not --input")
    return single


def synthesize(options: RunOptions) -> None:
    """What `mri2mri-run` does with its options: one subject, or every unit of a dataset."""
    if _is_single(options):
        inputs = _inputs(list(options.inputs))
        check_output_path(options.output, overwrite=options.overwrite)  # before the model loads
        if options.wants_report():
            check_output_path(options.report_path, overwrite=options.overwrite)
        run_one(_load(options), inputs, options)
        return
    synth = _load(options)
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        summary = _run_dataset(synth, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(summary)


def _load(options: RunOptions) -> Synthesizer:
    synth = Synthesizer(options.model, device=options.device, threads=options.threads,
                        batch_size=options.batch_size, trt_cache=options.trt_cache,
                        notify=_notify)
    if options.verbose:
        typer.echo(f"model {options.model.name}: {synth.task}, provider "
                   f"{synth.provider_name}, {synth.threads} CPU thread(s), batch "
                   f"{synth.runner.batch_size}")
        for name, reason in synth.provider_failures.items():
            typer.echo(f"provider {name} not used: {reason}")
    return synth


def _run_dataset(synth: Synthesizer, options: RunOptions) -> CohortSummary:
    with progress_bar(console=_err) as bar:
        task = bar.add_task("outputs", total=None)
        return run_dataset(
            options, synth=synth,
            progress=lambda done, total, label: bar.update(task, completed=done, total=total,
                                                           description=label, refresh=True))


def print_summary(summary: CohortSummary) -> None:
    """Warnings and failures on stderr, the report and the counts on stdout; exit 1 on failure."""
    for label, message in summary.flagged.items():
        _err.print(f"warning: {label}: {message}", markup=False, highlight=False,
                   soft_wrap=True)
    for label, error in summary.failed.items():
        _err.print(f"failed {label}: {error}", markup=False, highlight=False, soft_wrap=True)
    if summary.reports:
        typer.echo(f"report: {summary.reports[-1]}")
    typer.echo(summary.describe())
    if summary.failed:
        raise typer.Exit(1)


def _stop(signum: int, _frame: object) -> None:
    """A batch scheduler's SIGTERM unwinds like Ctrl-C, so temporary files are removed."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> None:
    run_app(app, expand_multi(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
