"""`mri2mri-demo`: a thin command-line layer over `mri2mri.demo.pipeline.run_demo`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mri2mri.runtime.core.cli_common import run_app

from .pipeline import run_demo

app = typer.Typer(add_completion=False)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Argument(help="Folder for everything the demo writes.")],
    *,
    subjects: Annotated[int, typer.Option(help="Subjects to simulate.")] = 12,
    seed: Annotated[int, typer.Option(help="Seed for data, split and training.")] = 0,
    resolution: Annotated[float, typer.Option(help="Voxel size of the cohort, mm.")] = 2.0,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (default: the small "
                                                     "preset's).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR's contents.")] = False,
) -> None:
    """Simulate a cohort, train T1w->T2w, export to ONNX, synthesize a held-out subject, report."""
    run_demo(out_dir, subjects=subjects, seed=seed, resolution=resolution, epochs=epochs,
             overwrite=overwrite)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
