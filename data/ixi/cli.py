"""`mri2mri-data ixi`: a thin typer layer over `mri2mri.data.ixi.importer.import_ixi`.

Only typer is imported at module level: the lead's `mri2mri-data` app imports this
for its command table, and `--help` must stay fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_SOURCE = "IXI-{}.tar archive or a folder of its extracted files."


def ixi(
    *,
    out: Annotated[Path, typer.Option("--out", help="Where to write the BIDS-like cohort.")],
    t1: Annotated[Path | None, typer.Option("--t1", help=_SOURCE.format("T1"))] = None,
    t2: Annotated[Path | None, typer.Option("--t2", help=_SOURCE.format("T2"))] = None,
    pd: Annotated[Path | None, typer.Option("--pd", help=_SOURCE.format("PD"))] = None,
    mra: Annotated[Path | None, typer.Option("--mra", help=_SOURCE.format("MRA"))] = None,
    dti: Annotated[Path | None, typer.Option("--dti", help=_SOURCE.format("DTI"))] = None,
    bvals: Annotated[Path | None, typer.Option("--bvals", help="IXI bvals.txt (default: "
                                                             "beside or inside --dti).")] = None,
    bvecs: Annotated[Path | None, typer.Option("--bvecs", help="IXI bvecs.txt (default: "
                                                             "beside or inside --dti).")] = None,
    jobs: Annotated[int, typer.Option("--jobs", help="Subjects processed in parallel.")] = 1,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo subjects that are "
                                                                "already complete.")] = False,
    settings: Annotated[str, typer.Option("--settings", help="Registration preset for "
                                                             "T1/MRA -> T2/PD.")] = "fast",
) -> None:
    """Import IXI (any subset of T1, T2, PD, MRA, DTI) into the layout mri2mri trains on.

    T1 and MRA are registered rigidly to the T2/PD grid; the DTI files become one 4D
    series with matching b-values (IXI's extra 17th volume is identified from the
    images and left out). Rerunning skips subjects that are already complete.
    """
    from mri2mri.runtime.core.progress import progress_bar

    from .importer import import_ixi

    with progress_bar() as bar:
        task = bar.add_task("importing IXI subjects", total=None)
        report = import_ixi(t1=t1, t2=t2, pd=pd, mra=mra, dti=dti, bvals=bvals, bvecs=bvecs,
                            out=out, jobs=jobs, overwrite=overwrite, settings=settings,
                            progress=lambda done, total: bar.update(task, completed=done,
                                                                    total=total))
    for line in report.problems:  # plain echo: one unwrapped line per message, greppable
        typer.echo(f"warning: {line}", err=True)
    for subject in report.subjects:
        typer.echo(subject.line(), err=True)
    typer.echo(report.summary())
    if report.failed:
        typer.echo(f"{len(report.failed)} subject(s) failed; see the messages above and "
                   f"{report.out / 'ixi_import_log.txt'}", err=True)
        raise typer.Exit(1)
