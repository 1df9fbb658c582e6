"""Do a model's out-of-distribution checks warn where they should? `mri2mri-bench
ood-calibration`.

Every check `mri2mri-run` makes (histogram distance, disagreement, feature figure, contrast
figure), each against the threshold the model records, on: the real scans of its source
contrast (beside each one's level-free gain over the other subjects' LUT, read from a
zero-shot ``summary.json``: the checks should not warn where the model wins), wrong
contrasts and inputs the simulator does not cover (`mri2mri.benchmarks.ood.inputs`: they
should). Whether each figure ranks the real subjects by gain is stated as a Spearman
correlation (higher figure, lower gain: negative is the useful sign) and the order itself.

    mri2mri-bench ood-calibration --model T1w-to-T2w --real REAL --out DIR \\
        [--zero-shot ZS/summary.json] [--dwi PSEUDO_DWI]         (DIR/summary.json, table.md)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from scipy import stats

from mri2mri.benchmarks.generalisation.zero_shot import level_free_gap
from mri2mri.runtime.models.registry import resolve_model
from mri2mri.runtime.synthesis.ood_checks import OodChecks
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

from .inputs import WARN_EXPECTED, Case, cases

#: The checks, as (key in the sidecar record, column name); "histogram" is the top level.
CHECKS = (("histogram", "histogram distance"), ("disagreement", "disagreement"),
          ("features", "feature figure"), ("contrast", "contrast figure"))


def verdicts(ood: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each check's figure, threshold and warning from a sidecar ``OutOfDistribution``."""
    distances = ood.get("distances") or {}
    found = {"histogram": {"figure": max(distances.values()) if distances else None,
                           "threshold": ood.get("threshold"), "warns": bool(ood.get("flagged")),
                           "reasons": ood.get("reasons", [])}}
    for key, _ in CHECKS[1:]:
        v = ood.get(key) or {}
        found[key] = {"figure": v.get("figure"), "threshold": v.get("threshold"),
                      "warns": bool(v.get("flagged")), "skipped": v.get("skipped", "")}
    return found


def gains(zero_shot: Path | None) -> dict[str, float]:
    """Level-free PSNR gain (model - LUT of the other subjects, brain) per subject."""
    if zero_shot is None:
        return {}
    summary = json.loads(Path(zero_shot).read_text())
    found = {}
    for sid, entry in summary["subjects"].items():
        gap = level_free_gap(entry["scores"], "model", "lut_others", "brain")
        if gap is None:
            raise KeyError(f"{zero_shot}: {sid} has no brain-region scores")
        found[sid] = round(gap, 3)
    return found


def ranking(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per check, whether its figure orders the real subjects by gain (Spearman)."""
    real = [r for r in rows if r["kind"] == "real" and r.get("gain_db") is not None]
    found: dict[str, Any] = {"subjects": len(real)}
    for key, _ in CHECKS:
        pairs = [(r["checks"][key]["figure"], r["gain_db"], r["subject"]) for r in real
                 if r["checks"][key]["figure"] is not None]
        if len(pairs) < 3:
            continue
        rho = float(stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])[0])
        found[key] = {"spearman": round(rho, 3),
                      "by_figure": [p[2] for p in sorted(pairs)],
                      "by_gain_descending": [p[2] for p in sorted(pairs, key=lambda p: -p[1])]}
    return found


def calibrate(model: str | Path, real: Path, *, zero_shot: Path | None = None,
              dwi: Path | None = None, threads: int | None = None) -> dict[str, Any]:
    """The summary: the model, every input's verdicts, and the ranking."""
    synth = Synthesizer(resolve_model(model), "cpu", threads)
    source, target = synth.sources[0], synth.target
    subjects = sorted(p.name for p in Path(real).glob("sub-*") if p.is_dir())
    wrong = [c for c in ("T1w", "T2w") if c != source] + ([target] if target not in
                                                          ("T1w", "T2w", source) else [])
    gain = gains(zero_shot)
    rows = []
    for case in cases(Path(real), source, subjects, wrong=wrong, dwi=dwi):
        rows.append(_row(synth, case, gain))
    return {"model": str(model), "task": synth.task, "real": str(real),
            "zero_shot": str(zero_shot) if zero_shot else None,
            "recorded": _recorded(synth.meta.ood),
            "rows": rows, "ranking": ranking(rows)}


def _recorded(ood: dict[str, Any]) -> dict[str, Any]:
    """The recorded references without their long vectors."""
    long = ("mean", "sd", "weights", "leave_one_out")
    found = {}
    for key, record in ood.items():
        if not isinstance(record, dict):
            continue
        found[key] = {k: v for k, v in record.items() if k not in long}
        loo = record.get("leave_one_out")
        if isinstance(loo, list) and loo:
            found[key]["leave_one_out_range"] = [min(loo), max(loo)]
        elif isinstance(loo, dict):
            found[key]["leave_one_out_range"] = {k: [min(v), max(v)] for k, v in loo.items()}
    return found


def _row(synth: Synthesizer, case: Case, gain: dict[str, float]) -> dict[str, Any]:
    checks = OodChecks(synth.meta)
    synth.synthesize([case.image], **checks.hooks)
    return {"input": case.label, "kind": case.kind, "subject": case.subject,
            "should_warn": WARN_EXPECTED[case.kind],
            "gain_db": gain.get(case.subject) if case.kind == "real" else None,
            "checks": verdicts(checks.as_dict())}


def _cell(v: dict[str, Any], decimals: int = 3) -> str:
    if v["figure"] is None:
        return "—"
    text = f"{v['figure']:.{decimals}f} / {v['threshold']:.{decimals}g}"
    return f"**{text}**" if v["warns"] else text


def table(summary: dict[str, Any]) -> str:
    """table.md: one row per input, figure / threshold per check (bold: warns)."""
    head = ["input", "subject", "should warn", "gain (dB)"] + [n for _, n in CHECKS] + \
        ["any warns"]
    lines = [f"OOD checks of `{Path(summary['model']).name}` ({summary['task']}); cells: "
             "figure / threshold, **bold: warns**. Gain: level-free PSNR, model − LUT of the "
             "other subjects (brain).", "", "| " + " | ".join(head) + " |",
             "|" + "---|" * len(head)]
    for r in summary["rows"]:
        gain = "" if r["gain_db"] is None else f"{r['gain_db']:+.2f}"
        cells = [_cell(r["checks"][k], 4 if k == "disagreement" else 3) for k, _ in CHECKS]
        warns = "yes" if any(r["checks"][k]["warns"] for k, _ in CHECKS) else "no"
        lines.append("| " + " | ".join([r["input"], r["subject"], r["should_warn"], gain,
                                        *cells, warns]) + " |")
    rank = summary["ranking"]
    lines += ["", f"Ranking of the {rank['subjects']} real subjects by gain (Spearman of "
                  "figure against gain; a useful figure is negative: higher figure, lower "
                  "gain; with so few subjects only ±1 or near it means anything):", ""]
    for key, name in CHECKS:
        if key in rank:
            r = rank[key]
            lines.append(f"- {name}: ρ = {r['spearman']:+.2f}; by figure (low to high) "
                         f"{', '.join(r['by_figure'])}; by gain (high to low) "
                         f"{', '.join(r['by_gain_descending'])}")
    return "\n".join(lines) + "\n"

