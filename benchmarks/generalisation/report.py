"""Tables of the cross-scanner evaluation: recipes (runs that differ only by seed) over cohorts.

A run directory named ``<recipe>-s<seed>`` belongs to `recipe`; a recipe's number
for a cohort is the mean over its seeds of the cohort mean, with the standard
deviation over seeds. Differences to a reference recipe are paired by seed.

The leave-one-out benchmark (`loo.py`) has its own table, `loo_table`, rendered
from its summary.json alone (so a summary can be rendered again), and results.csv
from the same summary (`write_results_csv`).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mri2mri.train.metrics import GAIN_MATCHED, LEVEL_FREE

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


# ---- leave one subject out (loo.py) -------------------------------------------------------

#: results.csv's columns, one row per held-out subject, method and region.
LOO_COLUMNS = ("subject", "method", "region", *LEVEL_FREE, "psnr", "ssim", "mae", *GAIN_MATCHED,
               "lesion_ml", "train_seconds", "score_seconds", "disagreement",
               "disagreement_threshold", "warned", "feature_figure", "feature_threshold",
               "feature_warned")
#: The model-based checks (their keys in a summary's subject entry; the zero-shot
#: network's are prefixed ``zero_shot_``) and their results.csv columns.
_CHECKS = {"disagreement": ("disagreement", "disagreement_threshold", "warned"),
           "features": ("feature_figure", "feature_threshold", "feature_warned")}
_NETWORKS = {"model": "", "zero_shot": "zero_shot_"}
#: A feature verdict's ``reference`` when it was made after training (`ood.feature_reference`).
REFERENCE_MADE_NOW = "made from the checkpoint's cohort"


def loo_rows(summary: dict) -> list[dict]:
    """results.csv's rows from a leave-one-out summary (zero-shot rows have no training time)."""
    rows = []
    for sid, entry in summary["subjects"].items():
        for method, regions in entry["scores"].items():
            zero = method.startswith("zero_shot")
            checks = {}
            for check, (figure, threshold, warned) in _CHECKS.items():
                verdict = (entry.get(_NETWORKS[method] + check) or {}) \
                    if method in _NETWORKS else {}
                checks |= {figure: _blank(verdict.get("figure")),
                           threshold: _blank(verdict.get("threshold")),
                           warned: _blank(verdict.get("flagged") if verdict.get("threshold")
                                          is not None else None)}
            for region, scores in regions.items():
                rows.append({
                    "subject": sid, "method": method, "region": region,
                    **{k: _blank(scores.get(k)) for k in LEVEL_FREE},  # older: none
                    **{k: scores[k] for k in ("psnr", "ssim", "mae")},
                    **{k: _blank(scores.get(k)) for k in GAIN_MATCHED},  # older: none
                    "lesion_ml": entry["lesion_ml"],
                    "train_seconds": "" if zero else entry["train_seconds"],
                    "score_seconds": entry["zero_shot_score_seconds"] if zero
                    else entry["score_seconds"], **checks})
    return rows


def write_results_csv(summary: dict, path: Path) -> None:
    """OUT/results.csv of a leave-one-out summary, atomically."""
    from mri2mri.runtime.core.atomic import atomic_path

    with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LOO_COLUMNS))
        writer.writeheader()
        writer.writerows(loo_rows(summary))


def _blank(value: object) -> object:
    return "" if value is None else value


def _psnr_gap(scores: dict, method: str, reference: str, region: str) -> float | None:
    """PSNR of `method` minus `reference` in `region`, None where either lacks it."""
    ours, ref = scores.get(method, {}).get(region), scores.get(reference, {}).get(region)
    return None if ours is None or ref is None else ours["psnr"] - ref["psnr"]


def _cell(scores: dict | None) -> str:
    return "" if scores is None else f"{scores['psnr']:.2f} / {scores['ssim']:.3f}"


def _gap(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


#: The gain-matched PSNR's key before the z-scored definition took the name "level-free".
_LEGACY_KEYS = {"psnr_level_free": "psnr_gain_matched"}


def upgrade_summary(summary: dict) -> dict:
    """A leave-one-out summary with its older key names renamed (``psnr_level_free``, the
    gain-matched PSNR, is ``psnr_gain_matched`` now); a current one is returned as it is."""
    def upgrade(scores: dict) -> dict:
        return {_LEGACY_KEYS.get(k, k): v for k, v in scores.items()}

    for entry in summary.get("subjects", {}).values():
        entry["scores"] = {method: {region: upgrade(scores) for region, scores in regions.items()}
                           for method, regions in entry.get("scores", {}).items()}
    summary["mean"] = {method: {region: upgrade(scores) for region, scores in regions.items()}
                       for method, regions in summary.get("mean", {}).items()}
    return summary


def loo_table(summary: dict) -> str:
    """The leave-one-out tables of docs/training.md: level-free first (each image z-scored;
    absent from a summary written before it), then as restored on the held-out subject's
    own scale (one row per held-out subject, the mean, and the zero-shot run against the
    same folds' LUTs when there is one), then with the best global gain, then the
    out-of-distribution figures."""
    subjects, means = summary["subjects"], summary["mean"]
    lines = ["| held-out subject | network PSNR (dB) / SSIM | LUT PSNR (dB) / SSIM | "
             "Δ PSNR network − LUT (dB) | Δ PSNR without lesion (dB) | lesion (ml) | "
             "training (min) |", "|---|---|---|---|---|---|---|"]

    def row(label: str, net: dict | None, lut: dict | None, *, gaps: list, lesion: str,
            minutes: str) -> None:
        lines.append(f"| {label} | {_cell(net)} | {_cell(lut)} | {_gap(gaps[0])} | "
                     f"{_gap(gaps[1])} | {lesion} | {minutes} |")

    def gaps(method: str) -> list:
        return [_mean([_psnr_gap(s["scores"], method, "lut", region) for s in subjects.values()])
                for region in ("brain", "brain_without_lesion")]

    for sid, entry in subjects.items():
        scores = entry["scores"]
        row(sid, scores["model"]["brain"], scores["lut"]["brain"],
            gaps=[_psnr_gap(scores, "model", "lut", r) for r in ("brain", "brain_without_lesion")],
            lesion=f"{entry['lesion_ml']:.1f}", minutes=f"{entry['train_seconds'] / 60:.1f}")
    lesion = _mean([s["lesion_ml"] for s in subjects.values()])
    row(f"mean ({len(subjects)})", means["model"]["brain"], means["lut"]["brain"],
        gaps=gaps("model"), lesion=f"{lesion:.1f}",
        minutes=f"{_mean([s['train_seconds'] for s in subjects.values()]) / 60:.1f}")
    notes = []
    if "zero_shot" in means:
        name = Path(summary.get("zero_shot_run") or "zero-shot").name
        row(f"zero-shot ({name})", means["zero_shot"]["brain"], means["lut"]["brain"],
            gaps=gaps("zero_shot"), lesion=f"{lesion:.1f}", minutes="—")
        notes.append(f"Zero-shot row: `{name}`, trained elsewhere, against the folds' LUTs; "
                     f"its own LUT scores {_cell(means['zero_shot_lut']['brain'])} "
                     "(PSNR dB / SSIM).")
    notes.append("Brain: the T1w foreground; without lesion: less the T2w-bright lesion "
                 "(`mri2mri.benchmarks.generalisation.lesion`). Δ: mean of per-subject "
                 "differences.")
    free = _level_free_table(summary)
    restored = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    if free:
        restored = ("\nScale-restored (each prediction on the held-out subject's own target "
                    "scale, so its overall intensity level counts too):\n\n" + restored)
    return free + restored + _gain_table(summary) + _ood_table(summary)


def _has(scores: dict, method: str, keys: tuple[str, ...], region: str = "brain") -> bool:
    return all(k in scores.get(method, {}).get(region, {}) for k in keys)


def _free_cell(scores: dict | None) -> str:
    if scores is None or "level_free_psnr" not in scores:
        return ""
    return (f"{scores['level_free_psnr']:.2f} / {scores['level_free_ssim']:.3f} / "
            f"{scores['level_free_mae']:.3f}")


def _free_gap(scores: dict, method: str, region: str) -> float | None:
    ours, ref = scores.get(method, {}).get(region, {}), scores.get("lut", {}).get(region, {})
    if "level_free_psnr" not in ours or "level_free_psnr" not in ref:
        return None
    return ours["level_free_psnr"] - ref["level_free_psnr"]


def _level_free_table(summary: dict) -> str:
    """Each held-out subject's level-free scores (`train.metrics.level_free_scores`: both
    images z-scored over the region), network against the fold's LUT (and the zero-shot
    run); empty for a summary written before them."""
    subjects = summary["subjects"]
    if not all(_has(e["scores"], m, LEVEL_FREE) for e in subjects.values()
               for m in ("model", "lut")):
        return ""
    zero = all(_has(e["scores"], "zero_shot", LEVEL_FREE) for e in subjects.values())
    head = ["held-out subject", "network PSNR (dB) / SSIM / MAE", "LUT PSNR (dB) / SSIM / MAE",
            "Δ PSNR network − LUT (dB)", "Δ PSNR without lesion (dB)"]
    if zero:
        head += ["zero-shot PSNR (dB) / SSIM / MAE", "Δ PSNR zero-shot − LUT (dB)"]
    lines = ["Level-free (`train.metrics.level_free_scores`: prediction and reference each "
             "z-scored over the brain, source and reference both above 0; MAE in reference "
             "SDs):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    methods = ("model", "lut", "zero_shot") if zero else ("model", "lut")

    def cells(label: str, rows: list[dict]) -> list[str]:
        def mean(method: str) -> dict | None:
            values = [r[method]["brain"] for r in rows]
            return {k: float(np.mean([v[k] for v in values])) for k in LEVEL_FREE}

        def gap(method: str, region: str) -> str:
            return _gap(_mean([_free_gap(r, method, region) for r in rows]))

        out = [label, _free_cell(mean("model")), _free_cell(mean("lut")),
               gap("model", "brain"), gap("model", "brain_without_lesion")]
        if "zero_shot" in methods:
            out += [_free_cell(mean("zero_shot")), gap("zero_shot", "brain")]
        return out

    lines += _subject_rows(subjects, cells)
    return "\n".join(lines) + "\n"


def _subject_rows(subjects: dict, cells: Callable[[str, list[dict]], list[str]]
                  ) -> list[str]:
    """Table rows: one per held-out subject, then their mean (`cells` of several)."""
    scores = [e["scores"] for e in subjects.values()]
    rows = [cells(sid, [e["scores"]]) for sid, e in subjects.items()]
    rows.append(cells(f"mean ({len(scores)})", scores))
    return ["| " + " | ".join(r) + " |" for r in rows]


def _gain_table(summary: dict) -> str:
    """Each held-out subject's scale-restored PSNR after the best global gain inside the
    brain, network against LUT, and the gain each needed: is a loss to the LUT one of
    contrast and structure, or only of the overall intensity level? Empty for a summary
    written before these figures."""
    subjects = summary["subjects"]
    if not all(_has(e["scores"], m, GAIN_MATCHED) for e in subjects.values()
               for m in ("model", "lut")):
        return ""
    zero = all(_has(e["scores"], "zero_shot", GAIN_MATCHED) for e in subjects.values())
    head = ["held-out subject", "network PSNR, gain-matched (dB)",
            "LUT PSNR, gain-matched (dB)", "Δ gain-matched (dB)", "network gain", "LUT gain"]
    if zero:
        head += ["zero-shot PSNR, gain-matched (dB)", "Δ zero-shot gain-matched (dB)",
                 "zero-shot gain"]
    lines = ["", "Gain-matched (each prediction scored again after the least-squares "
             "global gain inside the brain, `train.metrics.gain_matched`: what it scores with "
             "its overall intensity level right, on the subject's own scale; the gain is the "
             "level's error, 1 = right, below 1 = too bright):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cells(label: str, rows: list[dict]) -> list[str]:
        def mean(method: str, key: str) -> float:
            return float(np.mean([r[method]["brain"][key] for r in rows]))

        def gap(method: str) -> float:
            return float(np.mean([r[method]["brain"]["psnr_gain_matched"]
                                  - r["lut"]["brain"]["psnr_gain_matched"] for r in rows]))

        out = [label, f"{mean('model', 'psnr_gain_matched'):.2f}",
               f"{mean('lut', 'psnr_gain_matched'):.2f}", f"{gap('model'):+.2f}",
               f"{mean('model', 'level_gain'):.2f}", f"{mean('lut', 'level_gain'):.2f}"]
        if zero:
            out += [f"{mean('zero_shot', 'psnr_gain_matched'):.2f}",
                    f"{gap('zero_shot'):+.2f}", f"{mean('zero_shot', 'level_gain'):.2f}"]
        return out

    lines += _subject_rows(subjects, cells)
    return "\n".join(lines) + "\n"


def _verdict_cells(verdict: dict | None, digits: int = 4) -> list[str]:
    if not verdict or verdict.get("figure") is None:
        return ["not measured", ""]
    if verdict.get("threshold") is None:
        return [f"{verdict['figure']:.{digits}f} / none recorded", "—"]
    return [f"{verdict['figure']:.{digits}f} / {verdict['threshold']:.{digits}f}",
            "**yes**" if verdict["flagged"] else "no"]


#: The OOD table's column titles and figure digits per check.
_CHECK_COLUMNS = {"disagreement": ("disagreement / threshold", "warns", 4),
                  "features": ("features / threshold", "features warn", 3)}


def _ood_table(summary: dict) -> str:
    """Each held-out subject's model-based figures (and the zero-shot model's) beside its
    PSNR against the folds' LUT: does a warning fire where the network loses? A check
    that no subject of the summary has (an older summary) gets no column."""
    subjects = summary["subjects"]
    checks = [c for c in _CHECK_COLUMNS if any(c in e for e in subjects.values())]
    if not checks:
        return ""
    zero = [c for c in _CHECK_COLUMNS if any(f"zero_shot_{c}" in e for e in subjects.values())]
    head = ["held-out subject", "Δ PSNR network − LUT (dB)",
            *(t for c in checks for t in _CHECK_COLUMNS[c][:2])]
    if zero:
        head += ["Δ PSNR zero-shot − LUT (dB)",
                 *(f"zero-shot {t}" for c in zero for t in _CHECK_COLUMNS[c][:2])]
    lines = ["", "Out-of-distribution checks (`mri2mri-run`'s model-based figures on the "
             "held-out subject, against the thresholds each model recorded: disagreement "
             "from its own validation subjects, features from its training and validation "
             "subjects):", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sid, entry in subjects.items():
        cells = [sid, _gap(_psnr_gap(entry["scores"], "model", "lut", "brain"))]
        cells += [x for c in checks for x in _verdict_cells(entry.get(c), _CHECK_COLUMNS[c][2])]
        if zero:
            cells.append(_gap(_psnr_gap(entry["scores"], "zero_shot", "lut", "brain")))
            cells += [x for c in zero
                      for x in _verdict_cells(entry.get(f"zero_shot_{c}"), _CHECK_COLUMNS[c][2])]
        lines.append("| " + " | ".join(cells) + " |")
    made = sorted({sid for sid, e in subjects.items() for key in ("features", "zero_shot_features")
                   if (e.get(key) or {}).get("reference") == REFERENCE_MADE_NOW})
    if made:
        lines += ["", "Feature references made after training from the checkpoint and its "
                      f"cohort (trained before the check existed): {', '.join(made)}."]
    return "\n".join(lines) + "\n"
