"""`mri2mri-data`: build the datasets mri2mri trains and benchmarks on (BIDS layout)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mri2mri.data.ixi.cli import ixi
from mri2mri.runtime.core.cli_common import run_app

app = typer.Typer(help="Prepare BIDS datasets for mri2mri: the offline demo cohort, IXI, or "
                       "pseudo-DWIs from real T1w/T2w pairs.",
                  no_args_is_help=True, add_completion=False)


@app.callback()
def _group() -> None:
    """Prepare BIDS datasets for mri2mri: the offline demo cohort, IXI, or pseudo-DWIs."""


@app.command("demo")
def demo(
    out_dir: Annotated[Path, typer.Argument(help="Where to write the BIDS dataset.")],
    *,
    subjects: Annotated[int, typer.Option(help="Number of subjects.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    resolution: Annotated[float, typer.Option(help="Anatomical voxel size in mm (1 = like "
                                                   "IXI; 2 for fast CPU demos).")] = 2.0,
    preview: Annotated[bool, typer.Option(help="Write preview.png: one subject's contrasts.")]
    = False,
    jobs: Annotated[int, typer.Option(help="Parallel worker processes (the output does not "
                                           "depend on it).")] = min(4, os.cpu_count() or 1),
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
    head: Annotated[bool, typer.Option(help="Add CSF, skull, scalp muscle, fat and skin "
                                            "around the brain (a larger grid).")] = False,
    epi: Annotated[bool, typer.Option(help="Read the DWI out with the EPI model: distortion "
                                           "in Hz x readout time, k-space window, Nyquist "
                                           "ghost, IXI-measured SNR.")] = False,
    dwi_distortion: Annotated[bool, typer.Option(
        help="Displace the DWI along phase encoding (susceptibility); --no-dwi-distortion: "
             "an undistorted DWI (what the b=0 starter models train on).")] = True,
    shift: Annotated[list[str] | None, typer.Option(
        help="Simulate another scanner, CONTRAST.FIELD=VALUE (repeatable), e.g. T1w.ti=1400, "
             "T1w.gm_wm_contrast=0.5, T1w.snr=10, dwi.te=60, T2w.bias_peak=0.4, "
             "T1w.blur_fwhm_mm=4; fields tr, te, ti, flip, shot_interval (ms, degrees), "
             "gm_wm_contrast, snr, bias_peak, blur_fwhm_mm.")] = None,
    variety: Annotated[str, typer.Option(
        help="Per-subject variety: 'starter' (what starter models train on), or "
             "scanners=P,lesions=P,max_lesions=N,skull_strip=P (P: probability per subject): "
             "a random scanner, tumour/oedema/necrosis lesions, an imperfect skull "
             "stripping with zero background.")] = "none",
) -> None:
    """Simulate a multi-contrast cohort (T1w, T2w, PDw, DWI) from the MNI152 2009 template."""
    from mri2mri.runtime.core.errors import InputError
    from mri2mri.runtime.core.progress import progress_bar

    from .simulate.demo_cohort import generate_cohort
    from .simulate.shift import AcquisitionShift
    from .simulate.variety import Variety

    try:
        scanner = AcquisitionShift.parse(shift or [])
        varied = Variety.parse(variety)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None

    with progress_bar() as bar:
        task = bar.add_task("simulating subjects", total=subjects)
        out = generate_cohort(out_dir, subjects=subjects, seed=seed, resolution=resolution,
                              preview=preview, jobs=jobs, overwrite=overwrite,
                              progress=lambda done, total: bar.update(task, completed=done),
                              shift=scanner, head=head, epi=epi, variety=varied,
                              dwi_distortion=dwi_distortion)
    typer.echo(f"wrote {subjects} simulated subjects to {out}")
    if preview:
        typer.echo(f"preview: {out / 'preview.png'}")


@app.command("pseudo-dwi")
def pseudo_dwi(
    source: Annotated[Path, typer.Argument(help="BIDS folder of real subjects with T1w and "
                                                "T2w images.")],
    out_dir: Annotated[Path, typer.Argument(help="Where to write the pseudo-DWI cohort.")],
    *,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 0,
    b0_volumes: Annotated[int, typer.Option(help="b=0 volumes per DWI (own noise each).")] = 2,
    distortion: Annotated[bool, typer.Option(
        help="Distort the b=0 by off-resonance x readout time; --no-distortion: a "
             "TotalReadoutTime of 0, an undistorted b=0 (to score a T1w -> b0 model).")] = True,
    jobs: Annotated[int, typer.Option(help="Parallel worker processes.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Real T1w plus a b=0 EPI simulated from each subject's real T2w (same world space)."""
    from mri2mri.runtime.core.progress import progress_bar

    from .simulate.pseudo_dwi import describe, make_pseudo_dwi

    with progress_bar() as bar:
        task = bar.add_task("simulating b=0 EPIs", total=None)
        out = make_pseudo_dwi(source, out_dir, seed=seed, b0_volumes=b0_volumes, jobs=jobs,
                              distortion=distortion, overwrite=overwrite,
                              progress=lambda done, total: bar.update(task, completed=done,
                                                                      total=total))
    typer.echo(describe(out))


app.command("ixi")(ixi)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
