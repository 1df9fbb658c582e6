"""summary.json, results.csv and table.md of a distortion benchmark run, with the paired tests.

The comparisons are paired (every subject is corrected by every method), so the tests are
those of the registration benchmark (`benchmarks.registration.stats.compare`: Wilcoxon
signed-rank, Mann-Whitney U, ratio of means with a paired bootstrap interval). The
acceptance targets of issue 32 are checked in the table, each marked met or not.
"""

from __future__ import annotations

import csv
import platform
from pathlib import Path

import numpy as np

from mri2mri.benchmarks.registration.stats import compare
from mri2mri.runtime.core.atomic import atomic_path, write_json

from .methods import METHODS, OURS, REFERENCE, SYN_SDC
from .metrics import ERROR_KEYS
from .runner import NO_HARM

SCORES = (*ERROR_KEYS, "level_free_psnr", "level_free_ssim", "level_free_mae", "cpu_s")
#: Issue 32's targets for ours: mean and p95 PE error (mm), the gap to the reference (mm),
#: the no-harm field (mm) and the estimation's CPU seconds.
TARGETS = {"pe_mean_mm": 0.10, "pe_p95_mm": 0.40, "reference_gap_mm": 0.05,
           "no_harm_field_max_mm": 0.1, "cpu_s": 60.0}


def by_method(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["method"], []).append(row)
    for group in out.values():
        group.sort(key=lambda r: r["subject"])
    return out


def means(rows: list[dict]) -> dict[str, dict[str, float]]:
    return {method: {k: float(np.mean([r[k] for r in group if k in r]))
                     for k in group[0] if k not in ("method", "subject")}
            for method, group in by_method(rows).items()}


def comparisons(rows: list[dict]) -> list[dict]:
    """Ours against each other method, paired, on the PE mean, PE p95 and boundary errors."""
    groups = by_method(rows)
    out = []
    for other in (m for m in METHODS if m in groups and m != OURS):
        if OURS not in groups:
            break
        for key in ("pe_mean_mm", "pe_p95_mm", "boundary_mm"):
            a = np.array([r[key] for r in groups[other]])
            b = np.array([r[key] for r in groups[OURS]])
            out.append({"a": other, "b": OURS, "metric": key, **compare(a, b)})
    return out


def targets(rows: list[dict]) -> dict[str, dict[str, object]]:
    """Each of issue 32's targets for ours: the measured value and whether it is met."""
    mean = means(rows)
    groups = by_method(rows)
    if OURS not in mean:
        return {}
    ours = mean[OURS]
    found: dict[str, dict[str, object]] = {
        "pe_mean_mm": {"value": ours["pe_mean_mm"]}, "pe_p95_mm": {"value": ours["pe_p95_mm"]},
        "cpu_s": {"value": max(r["cpu_s"] for r in groups[OURS])}}
    if REFERENCE in mean:
        found["reference_gap_mm"] = {"value": ours["pe_mean_mm"] - mean[REFERENCE]["pe_mean_mm"]}
    if NO_HARM in groups:
        found["no_harm_field_max_mm"] = {"value": max(r["field_max_mm"] for r in groups[NO_HARM])}
    for key, entry in found.items():
        entry["target"] = TARGETS[key]
        entry["met"] = bool(entry["value"] <= TARGETS[key])
    if SYN_SDC in groups:
        test = next(c for c in comparisons(rows) if c["a"] == SYN_SDC
                    and c["metric"] == "pe_mean_mm")
        found["below_syn_sdc"] = {"value": test["wilcoxon_p"], "target": "Wilcoxon p < 0.05, "
                                  "ours lower", "met": bool(test["mean_b"] < test["mean_a"]
                                                            and test["wilcoxon_p"] < 0.05)}
    return found


def _table(rows: list[dict], summary: dict) -> str:
    lines = ["| method | n | PE mean (mm) | PE p95 (mm) | PE max (mm) | 3D mean (mm) | "
             "boundary (mm) | level-free PSNR (dB) | level-free SSIM | CPU s (mean) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    groups = by_method(rows)
    for method, mean in summary["means"].items():
        lines.append(f"| {method} | {len(groups[method])} | {mean['pe_mean_mm']:.3f} | "
                     f"{mean['pe_p95_mm']:.3f} | {mean['pe_max_mm']:.2f} | "
                     f"{mean['error3d_mean_mm']:.3f} | {mean['boundary_mm']:.3f} | "
                     f"{mean['level_free_psnr']:.2f} | {mean['level_free_ssim']:.4f} | "
                     f"{mean['cpu_s']:.1f} |")
    lines += ["", "| B vs A | metric | mean A | mean B | ratio [95 % CI] | Wilcoxon p |",
              "|---|---|---|---|---|---|"]
    for c in summary["comparisons"]:
        lines.append(f"| {c['b']} vs {c['a']} | {c['metric']} | {c['mean_a']:.3f} | "
                     f"{c['mean_b']:.3f} | {c['ratio_of_means']:.2f} [{c['ratio_ci_low']:.2f}, "
                     f"{c['ratio_ci_high']:.2f}] | {c['wilcoxon_p']:.3g} |")
    lines += ["", "| target (ours) | value | target | met |", "|---|---|---|---|"]
    for key, t in summary["targets"].items():
        value = t["value"]
        lines.append(f"| {key} | {value:.3f} | {t['target']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def per_subject_table(rows: list[dict]) -> str:
    """PE mean / p95 / max (mm) per subject and method."""
    groups = by_method(rows)
    methods = [m for m in (*METHODS, NO_HARM) if m in groups]
    subjects = sorted({r["subject"] for r in rows})
    lines = ["| subject | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for s in subjects:
        cells = []
        for method in methods:
            r = next((x for x in groups[method] if x["subject"] == s), None)
            cells.append("-" if r is None else f"{r['pe_mean_mm']:.3f} / {r['pe_p95_mm']:.2f} / "
                                               f"{r['pe_max_mm']:.2f}")
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(rows: list[dict], out: Path, *, config: dict, seconds: float,
                  notes: list[str]) -> dict:
    """results.csv, summary.json and table.md in `out`; returns the summary."""
    import dipy

    summary = {"config": config, "means": means(rows), "comparisons": comparisons(rows),
               "targets": targets(rows), "wall_seconds": round(seconds, 1), "notes": notes,
               "subjects": sorted({r["subject"] for r in rows}),
               "software": {"python": platform.python_version(), "numpy": np.__version__,
                            "dipy": dipy.__version__}}
    keys = ["subject", "method"] + sorted({k for r in rows for k in r} - {"subject", "method"})
    with atomic_path(out / "results.csv", overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / "summary.json", summary, default=float)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(_table(rows, summary) + "\nPer subject, PE error mean / p95 / max "
                       "(mm):\n\n" + per_subject_table(rows))
    return summary
