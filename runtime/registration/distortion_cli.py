"""`mri2mri-register --correct-distortion`: distortion correction without a field map.

A thin typer layer over `mri2mri.runtime.registration.distortion_files.correct_distortion`;
`mri2mri-register` hands its command line here when it holds ``--correct-distortion``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.engine.devices import check_device

from .align import SETTINGS
from .distortion_files import correct_distortion, describe

#: The starter model's name (`mri2mri.runtime.models`): T1w -> b0.
DEFAULT_MODEL = "T1w-to-b0"

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Correct an EPI series (DWI or b=0) for susceptibility distortion "
                       "without a field map: register its b=0 along the phase-encoding axis "
                       "to a b=0 synthesized from the subject's T1w.")
_err = Console(stderr=True, highlight=False)


@app.command()
def correct(
    *,
    dwi: Annotated[Path, typer.Option(help="The series: a 4D DWI (with .bval/.bvec/.json "
                                           "beside it) or a 3D b=0 (with its .json).")],
    t1w: Annotated[Path, typer.Option(help="The subject's T1w.")],
    out: Annotated[Path, typer.Option(help="Output folder: a BIDS derivative (created, or "
                                           "added to).")],
    correct_distortion_: Annotated[bool, typer.Option(
        "--correct-distortion", help="This mode of mri2mri-register.")] = True,
    model: Annotated[str, typer.Option(help="T1w -> b0 model: a starter model's name or an "
                                            "ONNX file.")] = DEFAULT_MODEL,
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
    report: Annotated[bool, typer.Option(help="Write the HTML QC page.")] = True,
    settings: Annotated[str, typer.Option(help="Rigid registration settings: fast or "
                                               "study.")] = "fast",
    device: Annotated[str, typer.Option(help="Where the model runs: auto, tensorrt, cuda or "
                                             "cpu.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for the model.")] = None,
    no_trt_cache: Annotated[bool, typer.Option("--no-trt-cache", help="Do not keep TensorRT "
                                               "engines on disk.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Correct --dwi for susceptibility distortion through a b=0 synthesized from --t1w."""
    device = check_device(device)
    if settings not in SETTINGS:
        raise typer.BadParameter(f"choose from {', '.join(SETTINGS)}", param_hint="--settings")
    started = time.perf_counter()

    def say(message: str) -> None:
        _err.print(f"[{time.perf_counter() - started:6.1f} s] {message}")

    result = correct_distortion(
        dwi, t1w, out, model=model, subject=subject, report=report, overwrite=overwrite,
        progress=say, bvals=bval, bvecs=bvec, sidecar=sidecar,
        phase_encoding=phase_encoding_direction, total_readout_time=total_readout_time,
        registration_settings=settings, device=device, threads=threads,
        trt_cache=not no_trt_cache)
    typer.echo(f"corrected {dwi.name} in {time.perf_counter() - started:.1f} s: "
               f"{describe(result)}")
    for path in result.written:
        typer.echo(f"wrote {path}")


def main() -> None:
    run_app(app)
