"""QC reports of a synthesis run: one page per participant, and a group index.

Each unit shows its inputs and the synthesized image in three views, the
out-of-distribution verdict with its figures, the model card, and the run's
parameters and timings. What a unit did is read back from its JSON sidecar, so
outputs skipped as already finished are reported like new ones.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nibabel as nib

from mri2mri.runtime.bids.names import bval_path, sidecar_path
from mri2mri.runtime.imaging.nifti import load_volume

from ..metadata import ModelMetadata
from .figures import three_views
from .page import esc, figure, table, write_page

if TYPE_CHECKING:  # for the hints only: batch imports this module, which needs no model runtime
    from mri2mri.runtime.synthesis.batch import UnitResult


def model_card(meta: ModelMetadata) -> str:
    """Task, training data (name and summary), validation metrics, licences."""
    training = meta.training
    summary = meta.training_summary
    rows: list[tuple[str, Any]] = [
        ("task", meta.task), ("architecture", f"{meta.preset} U-Net, 2D axial slices"),
        ("training data", training.get("data", "not recorded")),
        ("subjects (train/validation/test)",
         "/".join(str(training.get("subjects", {}).get(k, "?"))
                  for k in ("train", "validation", "test"))),
        ("epochs", training.get("epochs", "?")), ("loss", training.get("loss", "?")),
        ("package version (export)", meta.package_version),
    ]
    if summary:
        rows += [("training voxel size (mm)", _range(summary.get("voxel_size_mm"))),
                 ("training field of view (mm)", _range(summary.get("field_of_view_mm"))),
                 ("training subjects summarised", summary.get("subjects"))]
    else:
        rows.append(("training-data summary", "none recorded: inputs are not compared"))
    validation = training.get("validation", {})
    for name, metrics in validation.items():
        if isinstance(metrics, Mapping):
            rows.append((f"validation ({name})", ", ".join(
                f"{k.upper()} {v:.4g}" for k, v in metrics.items()
                if isinstance(v, int | float))))
    rows += [("licence (model)", "Apache-2.0 (mri2mri)"), ("weights note", meta.weights_license)]
    return "<h2>Model card</h2>" + table(rows)


def _range(values: Sequence[float] | None) -> str:
    return "?" if not values else f"{values[0]:g} to {values[1]:g}"


def ood_block(ood: Mapping[str, Any]) -> str:
    """The verdict, in words and figures (a warning box when flagged)."""
    if not ood:
        return '<p class="fail">no verdict recorded</p>'
    css = "warn" if ood.get("flagged") else "ok"
    return f'<p class="{css}">Input {esc(ood.get("message", ""))}</p>'


def _sidecar(output: Path) -> dict[str, Any]:
    try:
        return json.loads(sidecar_path(output).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def unit_section(result: UnitResult, meta: ModelMetadata) -> str:
    """One unit: status, verdict, input and output views, timings."""
    head = f"<h2>{esc(result.label)}</h2>"
    if result.status == "failed":
        return head + f'<p class="fail">failed: {esc(result.error)}</p>'
    info = _sidecar(result.output).get("Mri2mri", {})
    parts = [head, ood_block(info.get("OutOfDistribution", {}))]
    for contrast, path in result.inputs.items():
        img = load_volume(path, bval_path(path) if contrast == "b0" else None)
        parts.append(figure(three_views(img), f"input {contrast}: {Path(path).name}"))
    parts.append(figure(three_views(nib.load(result.output)),
                        f"synthesized {meta.target}: {result.output.name}"))
    summary = meta.training_summary.get("contrasts", {})
    distances = info.get("OutOfDistribution", {}).get("distances", {})
    if summary and distances:
        got = ", ".join(f"{c} {d:.3f}" for c, d in distances.items())
        usual = ", ".join(f"{c} {v['training_distance_max']:.3f}" for c, v in summary.items())
        threshold = info["OutOfDistribution"].get("threshold")
        parts.append(f"<p>Foreground intensity distance to the training data: {esc(got)} "
                     f"(threshold {esc(threshold)}; training subjects: up to {esc(usual)})</p>")
    timings = info.get("TimingsSeconds", {})
    parts.append(table([("provider", info.get("Provider", "?")),
                        ("model", f"{info.get('Model', {}).get('File', '?')} (sha256 "
                                  f"{info.get('Model', {}).get('Sha256', '?')[:16]}...)"),
                        ("status", "written now" if result.status == "written"
                         else "finished by an earlier run"),
                        *((f"time: {k}", f"{v:.2f} s") for k, v in timings.items())]))
    return "".join(parts)


def _flagged(sidecar: Mapping[str, Any]) -> bool:
    return bool(sidecar.get("Mri2mri", {}).get("OutOfDistribution", {}).get("flagged"))


def index_table(out_dir: Path, this_run: Mapping[str, Sequence[UnitResult]]) -> str:
    """Every participant with a page in `out_dir` (earlier runs' too, e.g. job-array tasks)."""
    pages = {p.stem for p in out_dir.glob("sub-*.html")} | set(this_run)
    rows = []
    for participant in sorted(pages):
        sidecars = [json.loads(p.read_text()) for p in
                    sorted((out_dir / participant).rglob("*_desc-*.json"))
                    if not p.name.startswith(".")]
        units = this_run.get(participant)
        failed = "not in this run" if units is None else \
            str(sum(u.status == "failed" for u in units))
        rows.append(f'<tr><td><a href="{esc(participant)}.html">{esc(participant)}</a></td>'
                    f"<td>{len(sidecars)}</td><td>{esc(failed)}</td>"
                    f"<td>{sum(_flagged(s) for s in sidecars)}</td></tr>")
    return ("<table><tr><th>participant</th><th>outputs</th><th>failed</th>"
            f"<th>unlike the training data</th></tr>{''.join(rows)}</table>")


def write_reports(out_dir: Path, meta: ModelMetadata, results: Sequence[UnitResult],
                  params: Mapping[str, Any]) -> list[Path]:
    """``OUT/sub-<label>.html`` per participant and ``OUT/index.html``; returns their paths."""
    by_participant: dict[str, list[UnitResult]] = {}
    for r in sorted(results, key=lambda r: r.label):
        by_participant.setdefault(r.participant, []).append(r)
    written = []
    run = "<h2>Run</h2>" + table(params)
    card = model_card(meta)
    for participant, units in by_participant.items():
        body = "".join(unit_section(u, meta) for u in units) + card + run
        written.append(write_page(out_dir / f"{participant}.html",
                                  f"mri2mri {meta.task}: {participant}", body))
    index = index_table(out_dir, by_participant) + card + run
    written.append(write_page(out_dir / "index.html", f"mri2mri {meta.task}: all participants",
                              index))
    return written
