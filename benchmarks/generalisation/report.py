"""Tables of the cross-scanner evaluation: recipes (runs that differ only by seed) over cohorts.

A run directory named ``<recipe>-s<seed>`` belongs to `recipe`; a recipe's number
for a cohort is the mean over its seeds of the cohort mean, with the standard
deviation over seeds. Differences to a reference recipe are paired by seed.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

_SEEDED = re.compile(r"^(?P<recipe>.+)-s(?P<seed>\d+)$")


def recipe_of(run: str) -> tuple[str, int]:
    """``"E-cand-s2"`` -> ``("E-cand", 2)``; a name without a seed suffix is seed 0."""
    match = _SEEDED.match(run)
    return (match["recipe"], int(match["seed"])) if match else (run, 0)


def by_recipe(summary: dict[str, dict], metric: str = "psnr"
              ) -> dict[str, dict[str, dict[int, dict[str, float]]]]:
    """recipe -> cohort -> seed -> {"model": value, "lut": value}."""
    out: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for run, cohorts in summary.items():
        recipe, seed = recipe_of(run)
        for cohort, methods in cohorts.items():
            out.setdefault(recipe, {}).setdefault(cohort, {})[seed] = {
                m: v[metric] for m, v in methods.items()}
    return out


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def markdown_table(summary: dict[str, dict], cohorts: list[str], metric: str = "psnr",
                   reference: str | None = None) -> str:
    """Rows: the LUT baseline (of the reference recipe, or the first), then each recipe.

    With `reference`, each other recipe also gets a row of seed-paired differences
    (recipe - reference) for the seeds both have.
    """
    table = by_recipe(summary, metric)
    recipes = sorted(table)
    header = f"| recipe (seeds) | {' | '.join(cohorts)} |"
    lines = [header, "|" + "---|" * (len(cohorts) + 1)]
    base = reference if reference in table else recipes[0]

    def row(label: str, cells: list[str]) -> None:
        lines.append(f"| {label} | {' | '.join(cells)} |")

    row(f"LUT baseline ({base})", [_fmt([s["lut"] for s in table[base][c].values()])
                                   if c in table[base] else "" for c in cohorts])
    for recipe in recipes:
        seeds = sorted(next(iter(table[recipe].values())))
        row(f"{recipe} ({len(seeds)})", [_fmt([s["model"] for s in table[recipe][c].values()])
                                         if c in table[recipe] else "" for c in cohorts])
        if reference and recipe != reference and reference in table:
            cells = []
            for c in cohorts:
                ours, ref = table[recipe].get(c, {}), table[reference].get(c, {})
                paired = [ours[s]["model"] - ref[s]["model"] for s in sorted(ours) if s in ref]
                cells.append(_fmt(paired) if paired else "")
            row(f"  Δ {recipe} − {reference}", cells)
    return "\n".join(lines) + "\n"


def validation_curves(runs: list[Path]) -> dict[str, dict[str, list[list[float]]]]:
    """recipe -> {"model": [per seed: val PSNR per epoch], "lut": [...]} from metrics.csv."""
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for run in runs:
        with (Path(run) / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        entry = curves.setdefault(recipe_of(Path(run).name)[0], {"model": [], "lut": []})
        entry["model"].append([float(r["val_psnr"]) for r in rows])
        entry["lut"].append([float(r["lut_psnr"]) for r in rows])
    return curves


def plot_curves(runs: list[Path], out: Path) -> None:
    """Validation PSNR per epoch, one line per recipe (mean over seeds, band = min..max)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from mri2mri.runtime.core.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4))
    lut_drawn = False
    for recipe, entry in sorted(validation_curves(runs).items()):
        n = min(len(c) for c in entry["model"])
        values = np.array([c[:n] for c in entry["model"]])
        epochs = np.arange(1, n + 1)
        line, = ax.plot(epochs, values.mean(0), "o-", label=f"{recipe} ({len(values)})")
        if len(values) > 1:
            ax.fill_between(epochs, values.min(0), values.max(0), alpha=0.2,
                            color=line.get_color())
        if not lut_drawn:
            ax.axhline(float(np.mean([c[0] for c in entry["lut"]])), ls="--", color="k",
                       label="LUT baseline")
            lut_drawn = True
    ax.set(xlabel="epoch", ylabel="validation PSNR (dB)",
           title="validation (training scanner), mean over seeds")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
