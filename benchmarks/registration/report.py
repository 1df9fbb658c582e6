"""The benchmark's outputs: results.csv, summary.json, report.md and registration.png.

The figure follows the study's Figure 2: one point per subject, its error when
registered directly to the static image (x) against its error through the
synthesized image (y), with the identity line; points below the line are
subjects that the synthesized intermediary helped. ANTs is drawn against the
same x so the three methods can be compared at a glance.
"""

from __future__ import annotations

import csv
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.registration import get_settings

from .ants_baseline import ANTS_SETTINGS, ANTS_THREADS
from .methods import ANTS, DIRECT, VIA
from .protocols import PROTOCOLS
from .stats import compare

METRICS = ("translation_mae_mm", "rotation_mae_rad", "boundary_error_mm", "boundary_surface_mm",
           "mean_displacement_mm", "jenkinson_rms_mm")
#: report.md's columns: metric -> (heading, decimals).
MARKDOWN_COLUMNS = {"translation_mae_mm": ("translation MAE (mm)", 3),
                    "rotation_mae_rad": ("rotation MAE (rad)", 5),
                    "boundary_error_mm": ("boundary error (mm)", 3),
                    "boundary_surface_mm": ("boundary surface distance (mm)", 3),
                    "mean_displacement_mm": ("brain displacement (mm)", 3),
                    "jenkinson_rms_mm": ("Jenkinson RMS (mm)", 3),
                    "cpu_seconds": ("CPU s / registration", 1)}
#: (method B, method A): B/A ratios below 1 mean B is better.
COMPARISONS = ((VIA, DIRECT), (ANTS, DIRECT), (VIA, ANTS))
_FIRST_COLUMNS = ["subject", "method", "protocol", "moving_contrast", "static_contrast",
                  "settings", "masks", "transform", *METRICS]


def software_versions() -> dict[str, str | None]:
    """Versions of everything that can change the numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("mri2mri", "numpy", "scipy", "dipy", "nibabel", "onnxruntime-gpu",
                "onnxruntime", "antspyx", "dask", "distributed"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def result_rows(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Rows of registrations only (per-subject bookkeeping rows dropped), sorted."""
    keep = [r for r in rows if not str(r["method"]).startswith("_")]
    return sorted(keep, key=lambda r: (str(r["subject"]), str(r["method"]), str(r["protocol"])))


def write_csv(rows: list[dict[str, object]], path: Path) -> None:
    rows = result_rows(rows)
    columns = list(_FIRST_COLUMNS)
    for row in rows:
        columns += [k for k in row if k not in columns]
    with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _values(rows: list[dict[str, object]], method: str, protocol: str, metric: str
            ) -> dict[str, float]:
    return {str(r["subject"]): float(r[metric]) for r in rows
            if r["method"] == method and r["protocol"] == protocol and r.get(metric) is not None}


def summarise(rows: list[dict[str, object]], info: dict[str, object], config: dict[str, object]
              ) -> dict[str, object]:
    """Means, medians, paired and unpaired tests, settings, versions and timing."""
    subject_rows = [r for r in rows if r["method"] == "_subject"]
    timing = {key: float(sum(float(r.get(key) or 0.0) for r in subject_rows))
              for key in ("seconds", "cpu_seconds")}
    rows = result_rows(rows)
    methods = sorted({str(r["method"]) for r in rows})
    per_method: dict[str, dict[str, object]] = {}
    tests: dict[str, dict[str, object]] = {}
    for protocol in PROTOCOLS:
        per_method[protocol] = {}
        for method in methods:
            stats_m: dict[str, object] = {}
            for metric in (*METRICS, "seconds", "cpu_seconds"):
                values = np.array(list(_values(rows, method, protocol, metric).values()))
                if values.size:
                    stats_m[metric] = {"mean": float(values.mean()),
                                       "median": float(np.median(values)),
                                       "std": float(values.std(ddof=1)) if values.size > 1
                                       else 0.0, "n": int(values.size)}
            per_method[protocol][method] = stats_m
        tests[protocol] = {}
        for b, a in COMPARISONS:
            if a not in methods or b not in methods:
                continue
            entry: dict[str, object] = {}
            for metric in METRICS:
                va, vb = _values(rows, a, protocol, metric), _values(rows, b, protocol, metric)
                common = sorted(set(va) & set(vb))
                if common:
                    entry[metric] = compare(np.array([va[s] for s in common]),
                                            np.array([vb[s] for s in common]))
            tests[protocol][f"{b} vs {a}"] = entry
    settings = get_settings(str(config["settings"]))
    return {
        "config": config,
        "settings": {"dipy": settings.describe(),
                     "dipy_transform": rows[0]["transform"] if rows else None,
                     "ants": {**{k: list(v) if isinstance(v, tuple) else v
                                 for k, v in ANTS_SETTINGS.items()}, "threads": ANTS_THREADS}
                     if ANTS in methods else None},
        "results": per_method,
        "subject_time_total": timing,
        "tests": tests,
        "tests_note": "ratio_of_means = mean(B)/mean(A) for 'B vs A' (below 1: B has smaller "
                      "errors); wilcoxon = paired signed-rank test; mann_whitney = the study's "
                      "unpaired test; CI: paired bootstrap (BCa, 95 %)",
        "software": software_versions(),
        **info,
    }


def write_summary(summary: dict[str, object], path: Path) -> None:
    write_json(path, summary, default=float)


def markdown_report(summary: dict[str, object]) -> str:
    """report.md: mean errors per protocol and method, then the paired comparisons."""
    config = summary["config"]
    lines = [f"# Registration benchmark: {config['moving_contrast']} -> "
             f"{config['static_contrast']}", "",
             f"{len(summary['subjects'])} subjects, DIPY settings `{config['settings']}`, "
             f"masks `{config.get('masks', 'none')}`, motion seed {config['seed']}; means over "
             "subjects. Boundary error: mean distance between where the estimated and the "
             "true transform put the moving image's brain surface; surface distance: the "
             "same surfaces compared as shapes (symmetric, nearest point).", "",
             "| protocol | method | " + " | ".join(h for h, _ in MARKDOWN_COLUMNS.values())
             + " |", "|" + "---|" * (len(MARKDOWN_COLUMNS) + 2)]
    for protocol, methods in summary["results"].items():
        for method, stats in methods.items():
            cells = [f"{stats[m]['mean']:.{d}f}" if m in stats else ""
                     for m, (_, d) in MARKDOWN_COLUMNS.items()]
            lines.append(f"| {protocol.replace('_', ' ')} | {method} | {' | '.join(cells)} |")
    lines += ["", "Paired comparisons (ratio of means B/A with a bootstrap 95 % CI, "
              "Wilcoxon signed-rank p):", "",
              "| protocol | B vs A | translation | boundary error |", "|---|---|---|---|"]
    for protocol, comparisons in summary["tests"].items():
        for name, entry in comparisons.items():
            cells = [f"{t['ratio_of_means']:.2f} [{t['ratio_ci_low']:.2f}, "
                     f"{t['ratio_ci_high']:.2f}], p = {t['wilcoxon_p']:.3g}" if t else ""
                     for t in (entry.get("translation_mae_mm"), entry.get("boundary_error_mm"))]
            lines.append(f"| {protocol.replace('_', ' ')} | {name} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


#: side_by_side's error columns, per protocol: metric -> (heading, decimals).
SIDE_BY_SIDE_COLUMNS = {"translation_mae_mm": ("transl. (mm)", 3),
                        "rotation_mae_rad": ("rot. (rad)", 4),
                        "boundary_error_mm": ("boundary (mm)", 3)}


def _p(value: float) -> str:
    return "n/a" if value != value else f"{value:.2g}"


def side_by_side(summaries: dict[str, dict]) -> str:
    """One markdown table of several benchmark runs (name -> its summary.json), then their tests.

    Why: the documentation compares cohorts and options; writing the table from the
    summaries themselves keeps every figure traceable to a run.
    """
    head = " | ".join(f"{p.replace('_', ' ')} {h}" for p in PROTOCOLS
                      for h, _ in SIDE_BY_SIDE_COLUMNS.values())
    lines = [f"| run | method | n | {head} |",
             "|---|---|---|" + "---|" * (len(PROTOCOLS) * len(SIDE_BY_SIDE_COLUMNS))]
    for name, summary in summaries.items():
        results = summary["results"]
        for method in sorted({m for p in PROTOCOLS for m in results.get(p, {})}):
            cells, n = [], ""
            for protocol in PROTOCOLS:
                stats = results.get(protocol, {}).get(method, {})
                for metric, (_, decimals) in SIDE_BY_SIDE_COLUMNS.items():
                    cells.append(f"{stats[metric]['mean']:.{decimals}f}" if metric in stats
                                 else "")
                    n = n or (str(stats[metric]["n"]) if metric in stats else "")
            lines.append(f"| {name} | {method} | {n} | {' | '.join(cells)} |")
    lines += ["", "| run | protocol | B vs A | translation: ratio [95 % CI], Wilcoxon p, "
              "Mann-Whitney p | boundary error: ratio, Wilcoxon p |", "|---|---|---|---|---|"]
    for name, summary in summaries.items():
        for protocol, comparisons in summary["tests"].items():
            for pair, entry in comparisons.items():
                t, b = entry.get("translation_mae_mm"), entry.get("boundary_error_mm")
                if not t:
                    continue
                boundary = f"{b['ratio_of_means']:.2f}, {_p(b['wilcoxon_p'])}" if b else ""
                lines.append(
                    f"| {name} | {protocol.replace('_', ' ')} | {pair} | "
                    f"{t['ratio_of_means']:.2f} [{t['ratio_ci_low']:.2f}, "
                    f"{t['ratio_ci_high']:.2f}], {_p(t['wilcoxon_p'])}, "
                    f"{_p(t['mann_whitney_p'])} | {boundary} |")
    return "\n".join(lines) + "\n"


def write_markdown(summary: dict[str, object], path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(markdown_report(summary))


def plot(rows: list[dict[str, object]], path: Path, title: str = "") -> None:
    """Figure-2-style scatter: direct (x) vs synthesized / ANTs (y), per protocol and metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result_rows(rows)
    panels = (("translation_mae_mm", "translation error (mm)"),
              ("rotation_mae_rad", "rotation error (rad)"))
    fig, axes = plt.subplots(len(PROTOCOLS), len(panels), figsize=(9, 8.5), squeeze=False)
    for i, protocol in enumerate(PROTOCOLS):
        for j, (metric, label) in enumerate(panels):
            ax = axes[i][j]
            x = _values(rows, DIRECT, protocol, metric)
            top = max(x.values(), default=1.0)
            for method, marker, colour, name in ((VIA, "o", "tab:blue", "DIPY via synthesized"),
                                                 (ANTS, "^", "tab:orange", "ANTs rigid")):
                y = _values(rows, method, protocol, metric)
                common = sorted(set(x) & set(y))
                if not common:
                    continue
                xs, ys = [x[s] for s in common], [y[s] for s in common]
                top = max(top, *ys)
                ax.scatter(xs, ys, marker=marker, color=colour, alpha=0.8,
                           label=f"{name} (mean {np.mean(ys):.3g})")
            top = top * 1.1 if top > 0 else 1.0
            ax.plot([0, top], [0, top], "k--", lw=1, label="identity")
            ax.set_xlim(0, top)
            ax.set_ylim(0, top)
            ax.set_aspect("equal")
            mean_x = np.mean(list(x.values())) if x else float("nan")
            ax.set_xlabel(f"{label}, DIPY direct (mean {mean_x:.3g})")
            ax.set_ylabel(f"{label}, other method")
            ax.set_title(protocol.replace("_", " "))
            ax.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
