"""`mri2mri-run`: synthesize a contrast with an exported ONNX model; no torch needed.

A thin typer layer over `mri2mri.runtime.synthesizer.Synthesizer` (one subject)
and `mri2mri.runtime.batch.synthesize_cohort` (a BIDS directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .atomic import check_output_path
from .batch import synthesize_cohort
from .cli_common import run_app
from .contrasts import canonical_contrast
from .devices import check_device
from .errors import InputError
from .progress import progress_bar
from .synthesizer import Synthesizer

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


def run_one(synth: Synthesizer, inputs: dict[str, Path] | list[Path], output: Path, *,
            bvals: Path | None, resample_to_first: bool, overwrite: bool, verbose: bool) -> None:
    """Synthesize one subject from files and write `output`."""
    if isinstance(inputs, list) and len(inputs) != 1 and len(synth.sources) == 1:
        raise InputError(None, f"model {synth.task} takes one input, got {len(inputs)}")
    with progress_bar(console=_err) as bar:
        task = bar.add_task(f"{synth.task} ({synth.provider_name})", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, refresh=True)

        timings = synth.synthesize_file(inputs, output, bvals=bvals,
                                        resample_to_first=resample_to_first,
                                        overwrite=overwrite, progress=show)
    typer.echo(f"wrote {output} ({synth.task}, {timings.total:.1f} s)")
    if verbose:
        stages = ", ".join(f"{k} {v:.2f} s" for k, v in timings.as_dict().items())
        typer.echo(f"timings: {stages}")


@app.command()
def run(
    model: Annotated[Path, typer.Option("--model", "-m",
                                        help="ONNX model written by mri2mri-export.")],
    inputs: Annotated[list[str] | None, typer.Option(
        "--input", "-i", help="Source image, CONTRAST=PATH (or PATH for a one-source model); "
                              "repeat for several sources.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Synthesized NIfTI to write.")] = None,
    bids: Annotated[Path | None, typer.Option("--bids",
                                              help="Batch mode: a BIDS dataset.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out",
                                                 help="Batch mode: output directory.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (TensorRT > CUDA > CPU, "
                                                         "whichever starts), tensorrt, cuda "
                                                         "or cpu.")] = "auto",
    no_trt_cache: Annotated[bool, typer.Option(
        "--no-trt-cache", help="Do not read or write TensorRT engines on disk (each run "
                               "rebuilds them).")] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b",
                                            help="Slices per network run.")] = 8,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="CPU threads (default: physical cores).")] = None,
    bval: Annotated[Path | None, typer.Option(
        "--bval", help="b-values of a 4D DWI input: its b=0 volumes are averaged.")] = None,
    resample_to_first: Annotated[bool, typer.Option(
        "--resample-to-first", help="Resample the other inputs onto the first's grid.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite",
                                            help="Replace existing outputs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v",
                                          help="Print the provider (and why faster ones "
                                               "did not start) and timings.")] = False,
) -> None:
    """Synthesize the model's target contrast for one subject, or for every subject of a
    BIDS dataset (--bids DIR --out OUT_DIR)."""
    device = check_device(device)
    single = bool(inputs) or output is not None
    if single == (bids is not None or out_dir is not None):
        raise InputError(None, "give either --input ... --output FILE, or --bids DIR --out DIR")
    if single and (not inputs or output is None):
        raise InputError(None, "--input and --output are both needed")
    if not single and (bids is None or out_dir is None):
        raise InputError(None, "--bids and --out are both needed")
    if single:
        parsed = _inputs(inputs)
        check_output_path(output, overwrite=overwrite)  # fail before loading the model
    synth = Synthesizer(model, device=device, threads=threads, batch_size=batch_size,
                        trt_cache=not no_trt_cache, notify=_notify)
    if verbose:
        typer.echo(f"model {model.name}: {synth.task}, provider {synth.provider_name}, "
                   f"{synth.threads} CPU thread(s), batch {synth.runner.batch_size}")
        for name, reason in synth.provider_failures.items():
            typer.echo(f"provider {name} not used: {reason}")
    if single:
        run_one(synth, parsed, output, bvals=bval, resample_to_first=resample_to_first,
                overwrite=overwrite, verbose=verbose)
        return
    with progress_bar(console=_err) as bar:
        task = bar.add_task("subjects", total=None)
        summary = synthesize_cohort(
            synth, bids, out_dir, resample_to_first=resample_to_first, overwrite=overwrite,
            progress=lambda done, total, sid: bar.update(task, completed=done, total=total,
                                                         description=sid, refresh=True))
    for sid, error in summary.failed.items():
        _err.print(f"failed {sid}: {error}", markup=False, highlight=False, soft_wrap=True)
    typer.echo(summary.describe())
    if summary.failed:
        raise typer.Exit(1)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
