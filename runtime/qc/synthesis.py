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
from string import Template
from typing import Any

import nibabel as nib

from mri2mri.runtime.bids.names import bval_path, sidecar_path
from mri2mri.runtime.imaging.nifti import load_volume

from ..metadata import ModelMetadata
from ..synthesis.contrast import KEY as CONTRAST
from ..synthesis.disagreement import KEY as DISAGREEMENT
from ..synthesis.features import KEY as FEATURES
from ..synthesis.jobs import UnitResult
from ..synthesis.ood_checks import warnings_of
from .figures import three_views
from .page import Html, figure, join, render, table, write_page

MODEL_CARD = Template("<h2>Model card</h2>$table")
RUN = Template("<h2>Run</h2>$table")
VERDICT = Template('<p class="$css">Input $message</p>')
NO_VERDICT = Html('<p class="fail">no verdict recorded</p>')
FAILED_UNIT = Template('<h2>$label</h2><p class="fail">failed: $error</p>')
UNIT = Template("<h2>$label</h2>$verdict$figures$distances$details")
DISTANCES = Template("<p>Foreground intensity distance to the training data: $got "
                     "(threshold $threshold; training subjects: up to $usual)</p>")
FIGURE = Template("<p>Model disagreement under small input changes: $figure (threshold "
                  "$threshold; validation subjects: up to $usual; $parts)</p>")
FEATURE_FIGURE = Template("<p>Network features against the training subjects': $figure "
                          "(threshold $threshold; training subjects, each against the others: "
                          "up to $usual; $slices slices)</p>")
CONTRAST_FIGURE = Template("<p>Contrast figure (0: like the model's source contrast, 1: like "
                           "$wrong given in its place): $figure (threshold $threshold)</p>")
INDEX = Template("<table><tr><th>participant</th><th>outputs</th><th>failed</th>"
                 "<th>unlike the training data</th></tr>$rows</table>")
INDEX_ROW = Template('<tr><td><a href="${participant}.html">$participant</a></td>'
                     "<td>$outputs</td><td>$failed</td><td>$flagged</td></tr>")


def _prior(prior: Mapping[str, Any] | None) -> str:
    """The simulated subjects trained on beside the cohort's own, in words."""
    if not prior:
        return "none"
    return (f"{prior.get('subjects', '?')} simulated subjects at "
            f"{prior.get('resolution_mm', '?')} mm, augmented {prior.get('augment', '?')}")


def model_card(meta: ModelMetadata) -> Html:
    """Task, training data (name and summary), validation metrics, licences."""
    training = meta.training
    summary = meta.training_summary
    rows: list[tuple[str, Any]] = [
        ("task", meta.task), ("architecture", f"{meta.preset} U-Net, 2D axial slices"),
        ("training data", training.get("data", "not recorded")),
        ("subjects (train/validation/test)",
         "/".join(str(training.get("subjects", {}).get(k, "?"))
                  for k in ("train", "validation", "test"))),
        ("split", training.get("split_rule", "not recorded")),
        ("initial weights", training.get("init_weights") or "random"),
        ("simulated prior", _prior(training.get("simulated_prior"))),
        ("epochs", training.get("epochs", "?")), ("loss", training.get("loss", "?")),
        ("package version (export)", meta.package_version),
    ]
    if summary:
        rows += [("training voxel size (mm)", _range(summary.get("voxel_size_mm"))),
                 ("training field of view (mm)", _range(summary.get("field_of_view_mm"))),
                 ("training subjects summarised", summary.get("subjects"))]
    else:
        rows.append(("training-data summary", "none recorded: inputs are not compared"))
    reference = meta.ood.get(DISAGREEMENT)
    rows.append(("disagreement reference", "none recorded: figures are not judged"
                 if not reference else f"validation subjects up to "
                 f"{max(reference['validation']):.4f}, threshold {reference['threshold']:.4g}"))
    found = meta.ood.get(FEATURES)
    rows.append(("feature reference", "none recorded: figures are not measured"
                 if not found else f"{found['subjects']} training subjects, each against the "
                 f"others up to {max(found['leave_one_out']):.3f}, threshold "
                 f"{found['threshold']:.3g} ({found['channels']} channels)"))
    made = meta.ood.get(CONTRAST)
    rows.append(("contrast reference", "none recorded: figures are not measured"
                 if not made else f"{made['subjects']} training subjects, their "
                 f"{made['wrong']} as the wrong contrast (leave one subject out: source up "
                 f"to {max(made['leave_one_out']['right']):.2f}, wrong from "
                 f"{min(made['leave_one_out']['wrong']):.2f}), threshold {made['threshold']:g}"))
    validation = training.get("validation", {})
    for name, metrics in validation.items():
        if isinstance(metrics, Mapping):
            rows.append((f"validation ({name})", ", ".join(
                f"{k.upper()} {v:.4g}" for k, v in metrics.items()
                if isinstance(v, int | float))))
    rows += _network_vs_lut(validation)
    rows += [("licence (model)", "Apache-2.0 (mri2mri)"), ("weights note", meta.weights_license)]
    return render(MODEL_CARD, table=table(rows))


def _network_vs_lut(validation: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """One row saying whether the network beat the look-up table on its validation subjects."""
    model, lut = validation.get("model"), validation.get("lut_baseline")
    if not isinstance(model, Mapping) or not isinstance(lut, Mapping) \
            or not {"psnr", "ssim"} <= model.keys() & lut.keys():
        return []
    gain = model["psnr"] - lut["psnr"]
    verdict = "the network beats the look-up table" if gain > 0 and model["ssim"] > lut["ssim"] \
        else "the look-up table is as good or better: prefer it, or more training data"
    return [("network - look-up table (validation)",
             f"PSNR {gain:+.2f} dB, SSIM {model['ssim'] - lut['ssim']:+.3f}: {verdict}")]


def _range(values: Sequence[float] | None) -> str:
    return "?" if not values else f"{values[0]:g} to {values[1]:g}"


def ood_block(ood: Mapping[str, Any]) -> Html:
    """The verdicts of both checks, in words (a warning box for each that flagged)."""
    if not ood:
        return NO_VERDICT
    blocks = [render(VERDICT, css="warn" if ood.get("flagged") else "ok",
                     message=ood.get("message", ""))]
    for key in (DISAGREEMENT, FEATURES):
        verdict = ood.get(key)
        if verdict:
            blocks.append(render(VERDICT, css="warn" if verdict.get("flagged") else "ok",
                                 message=verdict.get("message", "")))
    return join(blocks)


def _sidecar(output: Path) -> dict[str, Any]:
    try:
        return json.loads(sidecar_path(output).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def unit_section(result: UnitResult, meta: ModelMetadata,
                 info: Mapping[str, Any] | None = None) -> Html:
    """One unit: status, verdict, input and output views, timings.

    `info` is how the output was made (`jobs.run_record`); None: read from its sidecar.
    """
    if result.status == "failed":
        return render(FAILED_UNIT, label=result.label, error=result.error)
    if info is None:
        info = _sidecar(result.output).get("Mri2mri", {})
    figures = [figure(three_views(load_volume(path, _bvals(result, contrast, path))),
                      f"input {contrast}: {Path(path).name}")
               for contrast, path in result.inputs.items()]
    figures.append(figure(three_views(nib.load(result.output)),
                          f"synthesized {meta.target}: {result.output.name}"))
    return render(UNIT, label=result.label, verdict=ood_block(info.get("OutOfDistribution", {})),
                  figures=join(figures), distances=join([_distances(meta, info),
                                                         _disagreement(info),
                                                         _features(info),
                                                         _contrast(info)]),
                  details=_details(result, info))


def _bvals(result: UnitResult, contrast: str, path: str) -> str | Path | None:
    """The b-values of a DWI input: given with it (``--bval``), else the BIDS ``.bval``."""
    if result.bvals and (contrast == "b0" or len(result.inputs) == 1):
        return result.bvals
    return bval_path(path) if contrast == "b0" else None


def _distances(meta: ModelMetadata, info: Mapping[str, Any]) -> Html:
    """The input's distances to the training data, beside the training subjects' own."""
    summary = meta.training_summary.get("contrasts", {})
    distances = info.get("OutOfDistribution", {}).get("distances", {})
    if not (summary and distances):
        return Html("")
    return render(DISTANCES, got=", ".join(f"{c} {d:.3f}" for c, d in distances.items()),
                  threshold=info["OutOfDistribution"].get("threshold"),
                  usual=", ".join(f"{c} {v['training_distance_max']:.3f}"
                                  for c, v in summary.items()))


def _disagreement(info: Mapping[str, Any]) -> Html:
    """The model's disagreement figure, beside its validation subjects' largest."""
    found = info.get("OutOfDistribution", {}).get(DISAGREEMENT) or {}
    if found.get("figure") is None:
        return Html("")
    usual = found.get("validation_max")
    return render(FIGURE, figure=f"{found['figure']:.4f}",
                  threshold="none" if found.get("threshold") is None
                  else f"{found['threshold']:.4g}",
                  usual="not recorded" if usual is None else f"{usual:.4f}",
                  parts=", ".join(f"{k} {v:.4f}" for k, v in found["perturbations"].items()))


def _features(info: Mapping[str, Any]) -> Html:
    """The feature figure, beside the training subjects' largest leave-one-out figure."""
    found = info.get("OutOfDistribution", {}).get(FEATURES) or {}
    if found.get("figure") is None:
        return Html("")
    usual = found.get("reference_max")
    return render(FEATURE_FIGURE, figure=f"{found['figure']:.3f}",
                  threshold="none" if found.get("threshold") is None
                  else f"{found['threshold']:.3g}",
                  usual="not recorded" if usual is None else f"{usual:.3f}",
                  slices=found.get("slices", "?"))


def _contrast(info: Mapping[str, Any]) -> Html:
    """The contrast figure against its threshold."""
    found = info.get("OutOfDistribution", {}).get(CONTRAST) or {}
    if found.get("figure") is None:
        return Html("")
    return render(CONTRAST_FIGURE, figure=f"{found['figure']:.3f}",
                  threshold=f"{found['threshold']:g}", wrong=found.get("wrong") or "the target")


def _details(result: UnitResult, info: Mapping[str, Any]) -> Html:
    """Provider, model file, whether written now, and the time of each stage."""
    model = info.get("Model", {})
    sha = model.get("Sha256", "?")[:16]
    return table([("provider", info.get("Provider", "?")),
                  ("model", f"{model.get('File', '?')} (sha256 {sha}...)"),
                  ("status", "written now" if result.status == "written"
                   else "finished by an earlier run"),
                  *((f"time: {k}", f"{v:.2f} s")
                    for k, v in info.get("TimingsSeconds", {}).items())])


def _flagged(sidecar: Mapping[str, Any]) -> bool:
    return bool(warnings_of(sidecar.get("Mri2mri", {}).get("OutOfDistribution", {})))


def index_table(out_dir: Path, this_run: Mapping[str, Sequence[UnitResult]]) -> Html:
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
        rows.append(render(INDEX_ROW, participant=participant, outputs=len(sidecars),
                           failed=failed, flagged=sum(_flagged(s) for s in sidecars)))
    return render(INDEX, rows=join(rows))


def write_reports(out_dir: Path, meta: ModelMetadata, results: Sequence[UnitResult],
                  params: Mapping[str, Any]) -> list[Path]:
    """``OUT/sub-<label>.html`` per participant and ``OUT/index.html``; returns their paths."""
    by_participant: dict[str, list[UnitResult]] = {}
    for r in sorted(results, key=lambda r: r.label):
        by_participant.setdefault(r.participant, []).append(r)
    written = []
    run = render(RUN, table=table(params))
    card = model_card(meta)
    for participant, units in by_participant.items():
        body = join([*(unit_section(u, meta) for u in units), card, run])
        written.append(write_page(out_dir / f"{participant}.html",
                                  f"mri2mri {meta.task}: {participant}", body))
    index = join([index_table(out_dir, by_participant), card, run])
    written.append(write_page(out_dir / "index.html", f"mri2mri {meta.task}: all participants",
                              index))
    return written


def write_unit_report(path: Path, meta: ModelMetadata, result: UnitResult, *,
                      info: Mapping[str, Any], params: Mapping[str, Any]) -> Path:
    """One subject's page (``mri2mri-run --input ... --report``): the same unit section, model
    card and run table as a participant's page of the BIDS App."""
    run = render(RUN, table=table(params))
    body = join([unit_section(result, meta, info), model_card(meta), run])
    return write_page(path, f"mri2mri {meta.task}: {result.output.name}", body)
