"""`mri2mri-register --correct-distortion`: distortion correction without a field map.

A thin typer layer over `mri2mri.runtime.registration.distortion_files.correct_distortion`
(one series: ``--dwi --t1w --out``) and `distortion_bids.correct_dataset` (a BIDS dataset,
called the BIDS-Apps way, as `mri2mri-run` is: ``BIDS_DIR OUTPUT_DIR participant``);
`mri2mri-register` hands its command line here when it holds ``--correct-distortion``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mri2mri.runtime.core.cli_common import check_bids_app, expand_multi, run_app
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.devices import check_device

from .align import SETTINGS
from .distortion_files import correct_distortion, describe

#: The starter model's name (`mri2mri.runtime.models`): T1w -> b0.
DEFAULT_MODEL = "T1w-to-b0"

#: Said after every run: measured against known fields, the correction through today's
#: T1w -> b0 starter is not yet better than none (docs/registration.md).
EXPERIMENTAL = ("warning: distortion correction through a synthesized b=0 is experimental: "
                "measured against known fields it does not yet beat leaving the distortion "
                "uncorrected (docs/registration.md, 'Distortion correction without a field "
                "map'); check the QC page before using the result")

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Correct an EPI series (DWI or b=0) for susceptibility distortion "
                       "without a field map: register its b=0 along the phase-encoding axis "
                       "to a b=0 synthesized from the subject's T1w. One series: --dwi "
                       "--t1w --out; a BIDS dataset, per participant (a BIDS App): BIDS_DIR "
                       "OUTPUT_DIR participant.")
_err = Console(stderr=True, highlight=False)


@app.command()
def correct(
    bids_dir: Annotated[Path | None, typer.Argument(
        help="BIDS-App mode: the input BIDS dataset (each DWI with its .bval/.bvec/.json and "
             "the session's T1w).", show_default=False)] = None,
    output_dir: Annotated[Path | None, typer.Argument(
        help="BIDS-App mode: the derivative dataset to write (created, or added to).",
        show_default=False)] = None,
    analysis_level: Annotated[str | None, typer.Argument(
        help="BIDS-App mode: participant (the only level).", show_default=False)] = None,
    *,
    dwi: Annotated[Path | None, typer.Option(help="The series: a 4D DWI (with .bval/.bvec/"
                                                  ".json beside it) or a 3D b=0 (with its "
                                                  ".json).")] = None,
    t1w: Annotated[Path | None, typer.Option(help="The subject's T1w.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder: a BIDS derivative "
                                                  "(created, or added to).")] = None,
    correct_distortion_: Annotated[bool, typer.Option(
        "--correct-distortion", help="This mode of mri2mri-register.")] = True,
    model: Annotated[str, typer.Option(help="T1w -> b0 model: a starter model's name or an "
                                            "ONNX file.")] = DEFAULT_MODEL,
    participant_label: Annotated[list[str] | None, typer.Option(
        help="BIDS-App mode: only these participants (01 or sub-01; several may follow the "
             "option).")] = None,
    session_label: Annotated[list[str] | None, typer.Option(
        help="BIDS-App mode: only these sessions (1 or ses-1).")] = None,
    bval: Annotated[Path | None, typer.Option(help="b-values (default: beside --dwi).")]
    = None,
    bvec: Annotated[Path | None, typer.Option(help="b-vectors (default: beside --dwi).")]
    = None,
    sidecar: Annotated[Path | None, typer.Option(help="BIDS JSON sidecar (default: beside "
                                                      "--dwi).")] = None,
    phase_encoding_direction: Annotated[str | None, typer.Option(
        help="i, i-, j, j-, k or k-, when the sidecar lacks PhaseEncodingDirection.")] = None,
    total_readout_time: Annotated[float | None, typer.Option(
        help="Seconds, when the sidecar lacks TotalReadoutTime.")] = None,
    subject: Annotated[str | None, typer.Option(help="Subject label, when --dwi's name has "
                                                     "no sub- entity.")] = None,
    report: Annotated[bool, typer.Option(help="Write the HTML QC page (one per series).")]
    = True,
    settings: Annotated[str, typer.Option(help="Rigid registration settings: fast or "
                                               "study.")] = "fast",
    device: Annotated[str, typer.Option(help="Where the model runs: auto, tensorrt, cuda or "
                                             "cpu.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model.")] = None,
    no_trt_cache: Annotated[bool, typer.Option("--no-trt-cache", help="Do not keep TensorRT "
                                               "engines on disk.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (BIDS-App mode: "
                                                 "redo finished units).")] = False,
) -> None:
    """Correct --dwi for susceptibility distortion through a b=0 synthesized from --t1w, or
    every DWI of a BIDS dataset: BIDS_DIR OUTPUT_DIR participant (the BIDS-Apps convention)."""
    device = check_device(device)
    if settings not in SETTINGS:
        raise typer.BadParameter(f"choose from {', '.join(SETTINGS)}", param_hint="--settings")
    common = {"model": model, "report": report, "overwrite": overwrite, "device": device,
              "threads": threads, "trt_cache": not no_trt_cache,
              "registration_settings": settings, "phase_encoding": phase_encoding_direction,
              "total_readout_time": total_readout_time}
    if bids_dir is None:
        _one(dwi, t1w, out, labels=participant_label or session_label, subject=subject,
             bvals=bval, bvecs=bvec, sidecar=sidecar, **common)
    else:
        series = {"--dwi": dwi, "--t1w": t1w, "--out": out, "--bval": bval, "--bvec": bvec,
                  "--sidecar": sidecar, "--subject": subject}
        _dataset(bids_dir, output_dir, analysis_level, series_options=series,
                 participants=participant_label, sessions=session_label, **common)


def _clock() -> Callable[[str], None]:
    """Progress lines on stderr, each with the seconds since the start."""
    started = time.perf_counter()

    def say(message: str) -> None:
        _err.print(f"[{time.perf_counter() - started:6.1f} s] {message}", markup=False,
                   soft_wrap=True)

    return say


def _one(dwi: Path | None, t1w: Path | None, out: Path | None, *, labels: list[str] | None,
         **options: object) -> None:
    """One series (`options`: `correct_distortion`'s)."""
    if labels:
        raise InputError(None, "--participant-label and --session-label are for a BIDS "
                               "dataset (BIDS_DIR OUTPUT_DIR participant), not --dwi")
    if dwi is None or t1w is None or out is None:
        raise InputError(None, "give --dwi, --t1w and --out (one series), or BIDS_DIR "
                               "OUTPUT_DIR participant (a BIDS dataset)")
    started = time.perf_counter()
    result = correct_distortion(dwi, t1w, out, progress=_clock(), **options)
    typer.echo(f"corrected {dwi.name} in {time.perf_counter() - started:.1f} s: "
               f"{describe(result)}")
    for path in result.written:
        typer.echo(f"wrote {path}")
    _err.print(EXPERIMENTAL, markup=False, soft_wrap=True)


def _dataset(bids_dir: Path, output_dir: Path | None, analysis_level: str | None, *,
             series_options: dict[str, object], **options: object) -> None:
    """Every unit of a BIDS dataset (`options`: `correct_dataset`'s); exit 1 if one failed."""
    from mri2mri.runtime.synthesis.cli_run import print_summary

    from .distortion_bids import correct_dataset

    given = [name for name, value in series_options.items() if value is not None]
    if given:
        raise InputError(None, f"{', '.join(given)}: for one series (--dwi), not with "
                               "BIDS_DIR OUTPUT_DIR participant")
    check_bids_app(output_dir, analysis_level)
    assert output_dir is not None
    summary = correct_dataset(bids_dir, output_dir, progress=_clock(), **options)
    _err.print(EXPERIMENTAL, markup=False, soft_wrap=True)
    print_summary(summary)


def main(argv: list[str] | None = None) -> None:
    run_app(app, expand_multi(sys.argv[1:] if argv is None else argv))
