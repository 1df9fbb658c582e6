"""`mri2mri-register`: rigid/affine registration, directly or through a synthesized image.

A thin typer layer over `mri2mri.runtime.registration.via.register_files`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.engine.devices import check_device

from .align import SETTINGS
from .masks import DEFAULT_VIA_MASK, VIA_MASKS
from .via import register_files

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Register a moving image to a static one (DIPY mutual information), "
                       "optionally through an image synthesized from the static one. "
                       "With --correct-distortion: correct a DWI's susceptibility distortion "
                       "through a b=0 synthesized from the T1w, or every DWI of a BIDS "
                       "dataset with BIDS_DIR OUTPUT_DIR participant (mri2mri-register "
                       "--correct-distortion --help).")
_err = Console(stderr=True, highlight=False)


@app.command()
def register(
    *,
    moving: Annotated[Path, typer.Option(help="Image to align (e.g. the T1w).")],
    static: Annotated[Path, typer.Option(help="Reference image (e.g. the DWI: 3D b=0, or 4D "
                                              "with --bval).")],
    out_affine: Annotated[Path, typer.Option(help="4x4 RAS+ world affine, static point -> "
                                                  "moving point (DIPY convention).")],
    bval: Annotated[Path | None, typer.Option(help="b-values of a 4D --static: its b=0 "
                                                   "volumes are averaged.")] = None,
    via: Annotated[str | None, typer.Option(help="ONNX model file or starter model name "
                                                 "(static contrast -> moving contrast; "
                                                 "mri2mri-run --list-models): register to its "
                                                 "synthesized image instead.",
                                            show_default=False)] = None,
    moving_contrast: Annotated[str | None, typer.Option(help="Contrast of --moving (default: "
                                                             "from a BIDS-style file name).")]
    = None,
    static_contrast: Annotated[str | None, typer.Option(help="Contrast of --static (default: "
                                                             "from the file name).")] = None,
    out_itk: Annotated[Path | None, typer.Option(help="Same transform as ITK/ANTs text "
                                                      "(AffineTransform_double_3_3, LPS, "
                                                      "fixed=static).")] = None,
    out_resliced: Annotated[Path | None, typer.Option(help="Moving image resliced onto the "
                                                           "static grid.")] = None,
    out_synthesized: Annotated[Path | None, typer.Option(help="With --via: keep the "
                                                              "synthesized image.")] = None,
    affine: Annotated[bool, typer.Option("--affine/--rigid",
                                         help="12-parameter affine after the rigid stage, "
                                              "or rigid only.")] = False,
    settings: Annotated[str, typer.Option(help="fast (default) or study (the study's DIPY "
                                               "settings; about 20x slower).")] = "fast",
    device: Annotated[str, typer.Option(help="With --via: auto (TensorRT > CUDA > CPU), "
                                             "tensorrt, cuda or cpu.")] = "auto",
    no_trt_cache: Annotated[bool, typer.Option("--no-trt-cache", help="With --via: do not "
                                               "keep TensorRT engines on disk.")] = False,
    threads: Annotated[int | None, typer.Option(help="With --via: CPU threads for the "
                                                     "model.")] = None,
    report: Annotated[Path | None, typer.Option(help="Write an HTML QC report: before/after "
                                                     "with the static image's edges, and a "
                                                     "flicker.")] = None,
    moving_mask: Annotated[Path | None, typer.Option(help="Brain mask on the --moving grid "
                                                         "(NIfTI, nonzero = inside): the "
                                                         "metric only counts these voxels.")]
    = None,
    static_mask: Annotated[Path | None, typer.Option(help="Brain mask on the --static grid "
                                                         "(with --via, the synthesized image "
                                                         "shares it).")] = None,
    via_mask: Annotated[str, typer.Option(help="With --via and no --static-mask: auto "
                                               "(a brain mask of the synthesized image, "
                                               "median_otsu) or none.")] = DEFAULT_VIA_MASK,
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs.")] = False,
) -> None:
    """Register --moving to --static and write the transform (and optionally the resliced image)."""
    device = check_device(device)
    if settings not in SETTINGS:
        raise typer.BadParameter(f"choose from {', '.join(SETTINGS)}", param_hint="--settings")
    if via_mask not in VIA_MASKS:
        raise typer.BadParameter(f"choose from {', '.join(VIA_MASKS)}", param_hint="--via-mask")
    started = time.perf_counter()

    def say(message: str) -> None:
        _err.print(f"[{time.perf_counter() - started:6.1f} s] {message}")

    result = register_files(moving, static, out_affine=out_affine, bvals=bval, via=via,
                            moving_contrast=moving_contrast, static_contrast=static_contrast,
                            out_itk=out_itk, out_resliced=out_resliced,
                            out_synthesized=out_synthesized,
                            transform="affine" if affine else "rigid", settings=settings,
                            device=device, threads=threads, overwrite=overwrite, progress=say,
                            trt_cache=not no_trt_cache, report=report,
                            moving_mask=moving_mask, static_mask=static_mask, via_mask=via_mask)
    reg = result.registration
    mode = f"via {Path(result.via).name}" if result.via else "direct"
    typer.echo(f"registered {moving.name} -> {static.name} ({reg.transform}, {reg.settings} "
               f"settings, {mode}, masks: {result.masks}) in {time.perf_counter() - started:.1f} s "
               f"(registration {reg.seconds:.1f} s)")
    for path in result.written:
        typer.echo(f"wrote {path}")


def main() -> None:
    if "--correct-distortion" in sys.argv[1:]:  # its own options: distortion_cli
        from .distortion_cli import main as correct_distortion

        correct_distortion()
    else:
        run_app(app)


if __name__ == "__main__":
    main()
