"""`mri2mri-starter`: build the starter models from their recipes (a thin layer over `build`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mri2mri.runtime.core.cli_common import run_app

if TYPE_CHECKING:
    from .build import StarterBuild

app = typer.Typer(help="The starter models: trained on simulated brains only, shipped "
                       "with mri2mri and run by name (mri2mri-run --model NAME).",
                  no_args_is_help=True, add_completion=False)


@app.command("recipes")
def recipes() -> None:
    """List the recipes: one starter model each."""
    from .recipes import RECIPES

    for r in RECIPES.values():
        typer.echo(f"{r.name}\t{r.subjects} simulated subjects at {r.resolution:g} mm, "
                   f"seed {r.seed}: {r.summary}")


@app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="The recipe, e.g. T1w-to-T2w "
                                             "(mri2mri-starter recipes lists them).")],
    *,
    out: Annotated[Path, typer.Option("--out", help="Build folder (cohort, run, model, "
                                                    "card, scores).")],
    real: Annotated[Path | None, typer.Option(help="Real pairs to score the model on "
                                                   "zero-shot (BIDS folder); evaluation only, "
                                                   "never trained on. A b0 recipe uses it as "
                                                   "it is: T1w and DWI, e.g. mri2mri-data "
                                                   "pseudo-dwi REAL DIR --no-distortion.")
                      ] = None,
    install: Annotated[bool, typer.Option("--install", help="Add the model and its card to "
                                          "the runtime's registry (MRI2MRI_MODELS_DIR, else "
                                          "the package's folder).")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Empty --out first.")] = False,
    jobs: Annotated[int, typer.Option(help="Simulation worker processes.")] = 2,
) -> None:
    """Simulate, train, export and score one starter model; write its card."""
    from .build import build_starter

    _say_done(build_starter(name, out, real=real, install=install, overwrite=overwrite,
                            jobs=jobs))


@app.command("refresh")
def refresh(
    out: Annotated[Path, typer.Option("--out", help="A finished build folder "
                                                    "(mri2mri-starter build --out).")],
    *,
    real: Annotated[Path | None, typer.Option(help="Real pairs to score on (default: the "
                                                   "build's own --real, if it had one).")
                    ] = None,
    install: Annotated[bool, typer.Option("--install", help="Add the refreshed model and "
                                          "its card to the runtime's registry.")] = False,
) -> None:
    """Without training again: remake a build's out-of-distribution references (their
    definitions changed), export, score and write its card again."""
    from .build import refresh_starter

    _say_done(refresh_starter(out, real=real, install=install))


def _say_done(result: StarterBuild) -> None:
    """What a build or a refresh wrote, its time per step, and where it was installed."""
    typer.echo(f"wrote {result.model} and {result.card} "
               f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())})")
    if result.installed is not None:
        typer.echo(f"installed as {result.recipe.name}: {result.installed}")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
