"""Zero-shot synthesis on real scanners a model never saw, scored level-free.

The product's main job: a user's scanner is not among the model's training scanners.
`zero_shot` runs one ONNX model through the runtime (`Synthesizer`, exactly as
`mri2mri-run` does, with its out-of-distribution checks) on every subject of a real
cohort that has both contrasts, and scores per subject and as a mean, level-free
(`mri2mri.train.metrics.level_free_scores`: both images z-scored over the region):

- ``model``: the model's synthesis;
- ``lut_others``: the level-free LUT (`level_free.LevelFreeLUT`) fitted on the cohort's
  other subjects, what intensity alone transfers to an unseen scanner (the baseline);
- ``lut_own``: the same LUT fitted on the subject itself, the ceiling of any
  per-intensity map (it knows that scanner's own mapping).

Each in the brain (source and reference both above 0) and without the T2w-bright lesion
(`level_free.regions`), voxel by voxel on the anatomical image's grid: a ``b0`` (the mean
b=0 of a DWI, on its own grid) is resampled onto it by world coordinates, the model's
synthesis from a b=0 too (`scoring_grid`). Beside each subject's level-free gain over
the LUT it reports the model's out-of-distribution figures on that subject (the
sidecar's: histogram distance, disagreement, features, each against the threshold the
model recorded), to see whether a warning fires where the model loses. Writes
``summary.json``, ``results.csv`` and ``table.md`` (`write_outputs`, each atomically).
Torch-free.
"""

from __future__ import annotations

import csv
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime import __version__
from mri2mri.runtime.bids.names import dataset_name
from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.synthesis.ood_checks import OodChecks
from mri2mri.runtime.synthesis.synthesizer import Synthesizer
from mri2mri.train.metrics import LEVEL_FREE, level_free_region

from . import level_free
from .report import _verdict_cells

METHODS = ("model", "lut_others", "lut_own")
#: How table.md names each method.
METHOD_TITLES = {"model": "model", "lut_others": "LUT, other subjects",
                 "lut_own": "LUT, own subject (ceiling)"}
#: The model's out-of-distribution figures in results.csv (on its rows only).
OOD_COLUMNS = ("histogram_distance", "histogram_threshold", "histogram_warned",
               "disagreement", "disagreement_threshold", "disagreement_warned",
               "feature_figure", "feature_threshold", "feature_warned",
               "contrast_figure", "contrast_threshold", "contrast_warned")
#: results.csv's columns, one row per subject, method and region.
COLUMNS = ("subject", "method", "region", *LEVEL_FREE, "lesion_ml", "region_ml",
           "synthesis_seconds", *OOD_COLUMNS)
DEFINITIONS = {
    "region": "brain: voxels where source and reference are both > 0; brain_without_lesion: "
              "less the T2w-bright lesion (mri2mri.benchmarks.generalisation.lesion)",
    "level_free": "prediction and reference each z-scored over the region; PSNR = 20 log10("
                  "(max - min of the z-scored reference) / RMSE); SSIM = scikit-image "
                  "structural_similarity of the z-scored volumes (0 outside the region), "
                  "data_range = that max - min; MAE in reference SDs "
                  "(mri2mri.train.metrics.level_free_scores)",
    "lut": f"source / its {level_free.PERCENTILE:g}th percentile in the brain, clipped to "
           f"[0, {level_free.CLIP:g}], {level_free.BINS} equal bins, each the mean z-scored "
           "reference of its voxels (voxels of the fit's subjects pooled; empty bins "
           "interpolated); lut_others: fitted on the other subjects, lut_own: on the "
           "subject itself",
}

Progress = Callable[[str], None]


def zero_shot(model: str | Path, real: str | Path, out: str | Path, *, source: str = "T1w",
              target: str = "T2w", device: str = "auto", threads: int = 0,
              progress: Progress | None = None) -> dict[str, Any]:
    """Score `model` (an ONNX file, or a starter model's name: the runtime's
    `resolve_model`) zero-shot on every subject of `real`; write OUT's three files and
    return summary.json's content."""
    say = progress or (lambda _: None)
    started = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    source, target = _contrast(source, "--source"), _contrast(target, "--target")
    if source == target:
        raise InputError(None, f"--source and --target are both {source}")
    subjects = real_subjects(real, source, target)
    synthesizer = Synthesizer(model, device, threads or None)
    if synthesizer.sources != [source] or synthesizer.target != target:
        raise InputError(model, f"translates {'+'.join(synthesizer.sources)} -> "
                                f"{synthesizer.target}, not {source} -> {target}")
    say(f"{synthesizer.task} on {synthesizer.provider_name}: {len(subjects)} subjects of "
        f"{real}")
    stats = {}
    for k, subject in enumerate(subjects, 1):
        say(f"LUT statistics {k}/{len(subjects)}: {subject.id}")
        pair = Pair(subject, source, target)
        stats[subject.id] = level_free.LUTStats.of(pair.source, pair.reference, pair.brain)
    entries = {}
    for k, subject in enumerate(subjects, 1):
        say(f"{subject.id} ({k}/{len(subjects)}): synthesizing {target} from {source}")
        entries[subject.id] = score_subject(synthesizer, subject, source=source, target=target,
                                            stats=stats)
        psnr = {m: r["brain"]["level_free_psnr"] for m, r in entries[subject.id]["scores"].items()}
        say(f"{subject.id}: level-free PSNR model {psnr['model']:.2f} dB, LUT of the others "
            f"{psnr['lut_others']:.2f}, own LUT {psnr['lut_own']:.2f} "
            f"({entries[subject.id]['seconds']:.0f} s)")
    summary = {
        "model": str(model), "model_file": str(synthesizer.model_path),
        "model_sha256": synthesizer.model_sha256,
        "task": synthesizer.task, "source": source, "target": target, "real": str(real),
        "dataset": dataset_name(real), "definitions": DEFINITIONS,
        "execution": synthesizer.execution_info(), "subjects": entries,
        "mean": means(entries), "software": _software(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "wall_seconds": time.perf_counter() - started}
    write_outputs(summary, out)
    return summary


def _contrast(name: str, option: str) -> str:
    try:
        return canonical_contrast(name)
    except ValueError as exc:
        raise InputError(None, f"{option} {name}: {exc}") from None


def real_subjects(real: str | Path, source: str, target: str) -> list[Subject]:
    """The cohort's subjects with both contrasts: at least 2 (the LUT needs others). A
    ``b0`` is the mean b=0 of the subject's DWI (``sub-*/dwi/sub-*_dwi.nii.gz`` with its
    ``.bval``, `mri2mri.data.cohort`)."""
    if not Path(real).is_dir():
        raise InputError(real, "not a folder of real subjects (sub-*/anat/*.nii.gz; a b0: "
                               "sub-*/dwi/*_dwi.nii.gz with its .bval)")
    subjects = Cohort.discover(real).with_contrasts(source, target)
    if len(subjects) < 2:
        raise InputError(real, f"needs at least 2 subjects with {source} and {target} (the "
                               f"LUT is fitted on the others); found {len(subjects)}")
    return subjects


def scoring_grid(source: str, target: str) -> str:
    """Which image's grid a pair is scored on: the anatomical one's. A b=0 (the mean b=0 of
    a DWI, on the DWI's own grid) is resampled onto it by world coordinates, whichever side
    of the translation it is on; two anatomical images are scored on the source's grid."""
    return "target" if source == "b0" and target != "b0" else "source"


class Pair:
    """One subject's source image as the model takes it (on its own grid), and on the
    scoring grid (`scoring_grid`) the source, the reference and the brain as arrays."""

    def __init__(self, subject: Subject, source: str, target: str) -> None:
        self.image: nib.Nifti1Image = subject.load(source)
        reference = subject.load(target)
        self.grid = reference if scoring_grid(source, target) == "target" else self.image
        reference = resample_to(reference, self.grid)  # as it is where the grids agree
        self.source = np.asarray(resample_to(self.image, self.grid).dataobj, dtype=np.float32)
        self.reference = np.asarray(reference.dataobj, dtype=np.float32)
        if self.source.shape != self.reference.shape:
            raise InputError(subject.path(source), f"a {self.source.ndim}D image: "
                                                   "a 3D volume is needed")
        self.brain = level_free_region(self.source, self.reference)
        if not self.brain.any():
            raise InputError(subject.path(target), f"{source} and {target} are nowhere "
                                                   "both above 0")
        self.voxel_mm = tuple(float(z) for z in self.grid.header.get_zooms()[:3])


def score_subject(synthesizer: Synthesizer, subject: Subject, *, source: str, target: str,
                  stats: dict[str, level_free.LUTStats]) -> dict[str, Any]:
    """One subject: the model's synthesis (with its out-of-distribution checks; from the
    source on its own grid, then resampled onto the scoring grid), both LUTs, scored
    level-free in each region."""
    tick = time.perf_counter()
    pair = Pair(subject, source, target)
    checks = OodChecks(synthesizer.meta)
    synthesized = synthesizer.synthesize({source: pair.image}, **checks.hooks)
    synthesis_seconds = time.perf_counter() - tick
    synthesized = resample_to(synthesized, pair.grid)  # made on the source's grid
    others = level_free.LevelFreeLUT.fit(s for sid, s in stats.items() if sid != subject.id)
    own = level_free.LevelFreeLUT.fit([stats[subject.id]])
    volumes = {"model": np.asarray(synthesized.dataobj, dtype=np.float32),
               "lut_others": others.predict(pair.source, pair.brain),
               "lut_own": own.predict(pair.source, pair.brain)}
    where, lesion_ml = level_free.regions(pair.source, pair.reference, source_contrast=source,
                                          target_contrast=target, voxel_mm=pair.voxel_mm)
    voxel_ml = float(np.prod(pair.voxel_mm)) / 1000.0
    return {"scores": level_free.score(volumes, pair.reference, where),
            "lesion_ml": lesion_ml,
            "region_ml": {name: float(mask.sum()) * voxel_ml for name, mask in where.items()},
            "lut_empty_bins": {"lut_others": others.empty, "lut_own": own.empty},
            "ood": checks.as_dict(), "synthesis_seconds": synthesis_seconds,
            "seconds": time.perf_counter() - tick}


def means(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """method -> region -> metric -> mean over the subjects scored there (and their count)."""
    found: dict[str, Any] = {}
    for method in METHODS:
        for region in level_free.REGIONS:
            values = [e["scores"][method][region] for e in entries.values()
                      if region in e["scores"][method]]
            if values:
                found.setdefault(method, {})[region] = {
                    k: float(np.mean([v[k] for v in values])) for k in LEVEL_FREE
                } | {"subjects": len(values)}
    return found


def _software() -> dict[str, str]:
    import nibabel
    import onnxruntime
    import scipy
    import skimage

    return {"mri2mri": __version__, "python": platform.python_version(),
            "numpy": np.__version__, "scipy": scipy.__version__, "nibabel": nibabel.__version__,
            "onnxruntime": onnxruntime.__version__, "scikit-image": skimage.__version__}


# ---- outputs --------------------------------------------------------------------------------

def _blank(value: object) -> object:
    return "" if value is None else value


def ood_cells(ood: dict[str, Any]) -> dict[str, object]:
    """The model's out-of-distribution figures as results.csv cells ("" where none)."""
    distances = ood.get("distances") or {}
    distance = max(distances.values()) if distances else None
    checked = ood.get("checked", False) and distance is not None
    cells: dict[str, object] = {
        "histogram_distance": _blank(distance),
        "histogram_threshold": _blank(ood.get("threshold") if checked else None),
        "histogram_warned": _blank(ood.get("flagged") if checked else None)}
    for key, (figure, threshold, warned) in {
            "disagreement": ("disagreement", "disagreement_threshold", "disagreement_warned"),
            "features": ("feature_figure", "feature_threshold", "feature_warned"),
            "contrast": ("contrast_figure", "contrast_threshold", "contrast_warned")}.items():
        verdict = ood.get(key) or {}
        judged = verdict.get("threshold") is not None and verdict.get("figure") is not None
        cells |= {figure: _blank(verdict.get("figure")),
                  threshold: _blank(verdict.get("threshold")),
                  warned: _blank(verdict.get("flagged") if judged else None)}
    return cells


def rows(summary: dict[str, Any]) -> list[dict[str, object]]:
    """results.csv's rows: per subject, method and region (OOD figures on the model's)."""
    found = []
    for sid, entry in summary["subjects"].items():
        ood = ood_cells(entry.get("ood") or {})
        for method, regions in entry["scores"].items():
            for region, scores in regions.items():
                found.append({"subject": sid, "method": method, "region": region,
                              **{k: scores[k] for k in LEVEL_FREE},
                              "lesion_ml": _blank(entry.get("lesion_ml")),
                              "region_ml": entry["region_ml"][region],
                              "synthesis_seconds": entry["synthesis_seconds"]
                              if method == "model" else "",
                              **(ood if method == "model" else dict.fromkeys(OOD_COLUMNS, ""))})
    return found


def _cell(scores: dict[str, float] | None) -> str:
    if scores is None:
        return ""
    return (f"{scores['level_free_psnr']:.2f} / {scores['level_free_ssim']:.3f} / "
            f"{scores['level_free_mae']:.3f}")


def level_free_gap(scores: dict[str, Any], method: str, reference: str, region: str
                   ) -> float | None:
    """Level-free PSNR of `method` minus `reference`'s in `region` (None if either is
    missing), from a subject's ``scores``."""
    ours, ref = scores.get(method, {}).get(region), scores.get(reference, {}).get(region)
    return None if ours is None or ref is None else \
        ours["level_free_psnr"] - ref["level_free_psnr"]


def _signed(value: float | None) -> str:
    return "" if value is None else f"{value:+.2f}"


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def table(summary: dict[str, Any]) -> str:
    """table.md: per region, each subject's and the mean level-free scores of the three
    methods with the model's gains; then the out-of-distribution figures beside the gain."""
    subjects = summary["subjects"]
    lines = [f"Zero-shot {summary['source']} -> {summary['target']}: "
             f"`{Path(summary['model']).name}` on {len(subjects)} subjects of "
             f"`{summary['dataset']}`, scored level-free (each image z-scored over the "
             "region). Cells: PSNR (dB) / SSIM / MAE (reference SDs).", ""]
    titles = {"brain": "Brain (source and reference > 0)",
              "brain_without_lesion": "Brain without the T2w-bright lesion"}
    lesions = [e.get("lesion_ml") for e in subjects.values()]
    for region in level_free.REGIONS:
        scored = {sid: e for sid, e in subjects.items()
                  if region in e["scores"]["model"]}
        if not scored:
            continue
        if region == "brain_without_lesion" and not any(lesions):
            lines += ["No T2w-bright lesion was found in any subject: the brain without "
                      "lesion is the brain (results.csv and summary.json have its rows all "
                      "the same).", ""]
            continue
        head = ["subject", *(METHOD_TITLES[m] for m in METHODS),
                "Δ PSNR model − LUT others (dB)", "Δ PSNR model − own LUT (dB)", "lesion (ml)"]
        lines += [f"**{titles[region]}**", "", "| " + " | ".join(head) + " |",
                  "|" + "---|" * len(head)]
        for sid, entry in scored.items():
            s = entry["scores"]
            lesion = entry.get("lesion_ml")
            lines.append("| " + " | ".join([
                sid, *(_cell(s[m].get(region)) for m in METHODS),
                _signed(level_free_gap(s, "model", "lut_others", region)),
                _signed(level_free_gap(s, "model", "lut_own", region)),
                "" if lesion is None else f"{lesion:.1f}"]) + " |")
        mean = summary["mean"]
        lesion_mean = _mean([e.get("lesion_ml") for e in scored.values()])
        lines.append("| " + " | ".join([
            f"mean ({len(scored)})", *(_cell(mean.get(m, {}).get(region)) for m in METHODS),
            _signed(_mean([level_free_gap(e["scores"], "model", "lut_others", region)
                           for e in scored.values()])),
            _signed(_mean([level_free_gap(e["scores"], "model", "lut_own", region)
                           for e in scored.values()])),
            "" if lesion_mean is None else f"{lesion_mean:.1f}"]) + " |")
        lines.append("")
    lines += _ood_table(subjects)
    lines += ["Δ: mean of per-subject differences. LUT: " + DEFINITIONS["lut"] + "."]
    return "\n".join(lines) + "\n"


def _ood_table(subjects: dict[str, Any]) -> list[str]:
    head = ["subject", "Δ PSNR model − LUT others (dB)", "histogram distance / threshold",
            "histogram warns", "disagreement / threshold", "disagreement warns",
            "features / threshold", "features warn", "contrast / threshold", "contrast warns"]
    lines = ["**The model's out-of-distribution checks** (`mri2mri-run`'s figures on each "
             "subject, against the thresholds the model recorded), beside its level-free "
             "gain over the LUT:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sid, entry in subjects.items():
        ood = entry.get("ood") or {}
        cells = ood_cells(ood)
        if cells["histogram_distance"] == "":
            histogram = ["not measured", ""]
        elif cells["histogram_threshold"] == "":
            histogram = [f"{cells['histogram_distance']:.3f} / none recorded", "—"]
        else:
            histogram = [f"{cells['histogram_distance']:.3f} / {cells['histogram_threshold']:g}",
                         "**yes**" if cells["histogram_warned"] else "no"]
        lines.append("| " + " | ".join([
            sid, _signed(level_free_gap(entry["scores"], "model", "lut_others", "brain")),
            *histogram,
            *_verdict_cells(ood.get("disagreement")),
            *_verdict_cells(ood.get("features"), 3),
            *_verdict_cells(ood.get("contrast"), 3)]) + " |")
    return [*lines, ""]


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """results.csv, summary.json and table.md, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "results.csv", overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows(summary))
    write_json(out / "summary.json", summary)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(table(summary))
