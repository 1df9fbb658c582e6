"""How much any model could gain over the look-up table on a cohort, without training one.

Before a network is asked to beat the LUT on scanners it never saw, ask the data
whether there is anything to gain. Leaving one subject out, as the leave-one-out
benchmark does (same data path, same scoring, same regions), `headroom` scores:

- ``lut``: the per-intensity LUT fitted on the other subjects (the baseline);
- ``lut_own``: the LUT fitted on the held-out subject itself, the ceiling of any
  per-intensity map (it knows the scanner's own mapping);
- ``trees_intensity``: gradient-boosted trees on the source intensity alone, fitted
  on the others (a control: the trees' fitting, not their inputs, should not gain);
- ``trees_context``: the same trees given spatial context as well: the intensity
  smoothed at 1, 2, 4 and 8 pixels in-plane and at 3 voxels in 3D, its local spread,
  and the depth inside the brain. That is much of what a 2D network sees around a
  pixel, in a model that fits within minutes and cannot memorise anatomy.

If the context model gains little over the LUT across scanners, a network trained on
the same few subjects is not expected to gain much either: the cohort, not the
recipe, is the limit. The trees are fitted and used inside the brain only; outside it
they take the LUT's prediction, so SSIM's windows at the brain's edge see the same.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.imaging.preprocess import restore_volume
from mri2mri.runtime.metadata import Normalisation
from mri2mri.train.baseline import IntensityLUT
from mri2mri.train.model import get_preset
from mri2mri.train.prepare import SubjectData, load_subject

from .evaluate import score_regions
from .loo import REGIONS, _subjects, scored_regions

METHODS = ("lut", "lut_own", "trees_intensity", "trees_context")
#: In-plane smoothing scales (pixels) of the context features.
SCALES = (1.0, 2.0, 4.0, 8.0)
#: Brain voxels sampled from each training subject to fit the trees.
SAMPLES_PER_SUBJECT = 200_000

Progress = Callable[[str], None]


def context_features(data: SubjectData) -> np.ndarray:
    """(Z, H, W, F) features per pixel of the subject's slices; feature 0 is the intensity."""
    from scipy import ndimage

    x = data.prepared.slices[:, 0].astype(np.float32)
    features = [x] + [ndimage.gaussian_filter(x, (0, s, s)) for s in SCALES]
    local_mean = features[2]
    local_square = ndimage.gaussian_filter(x * x, (0, 2.0, 2.0))
    features.append(np.sqrt(np.maximum(local_square - local_mean ** 2, 0.0)))
    brain = data.mask_slices.astype(bool)
    features.append(np.stack([ndimage.distance_transform_edt(m) for m in brain]))
    features.append(ndimage.gaussian_filter(x, 3.0))
    return np.stack(features, axis=-1).astype(np.float32)


def _fit_trees(X: np.ndarray, y: np.ndarray, seed: int):
    from sklearn.ensemble import HistGradientBoostingRegressor

    return HistGradientBoostingRegressor(max_iter=300, learning_rate=0.1, max_leaf_nodes=63,
                                         random_state=seed).fit(X, y)


def _sample(data: SubjectData, features: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
    brain = data.mask_slices.astype(bool)
    X, y = features[brain], data.target_slices[:, 0][brain]
    keep = rng.choice(len(y), min(len(y), SAMPLES_PER_SUBJECT), replace=False)
    return X[keep], y[keep]


def held_out_scores(held: SubjectData, others: list[SubjectData],
                    features: dict[str, np.ndarray], seed: int = 0
                    ) -> tuple[dict[str, dict[str, dict[str, float]]], float]:
    """method -> region -> metrics for one held-out subject, and its lesion's volume (ml)."""
    lut = IntensityLUT.fit([o.prepared.slices for o in others], [o.target_slices for o in others])
    lut_slices = lut.predict(held.prepared.slices)
    own = IntensityLUT.fit([held.prepared.slices], [held.target_slices])
    predictions = {"lut": lut_slices, "lut_own": own.predict(held.prepared.slices)}
    rng = np.random.default_rng(seed)
    samples = [_sample(o, features[o.id], rng) for o in others]
    X, y = np.concatenate([s[0] for s in samples]), np.concatenate([s[1] for s in samples])
    brain = held.mask_slices.astype(bool)
    for name, columns in (("trees_intensity", [0]), ("trees_context", slice(None))):
        trees = _fit_trees(X[:, columns], y, seed)
        prediction = lut_slices.copy()
        prediction[:, 0][brain] = trees.predict(features[held.id][brain][:, columns])
        predictions[name] = prediction
    volumes = {m: restore_volume(p, held.prepared, held.target_scale)
               for m, p in predictions.items()}
    regions, lesion_ml = scored_regions(held)
    return score_regions(volumes, held.target_volume, regions), lesion_ml


def headroom(data: str | Path, out: str | Path, *, source: str = "T1w", target: str = "T2w",
             normalisation: str = "percentile", seed: int = 0,
             progress: Progress | None = None) -> dict[str, Any]:
    """Score the four methods on every subject left out; write summary.json and table.md."""
    say = progress or (lambda _: None)
    out = Path(out)
    subjects = _subjects(data, source, target)
    norm = Normalisation.named(normalisation)
    geometry = get_preset("small").geometry
    tick = time.perf_counter()
    prepared = {}
    for subject in subjects:
        say(f"preparing {subject.id}")
        prepared[subject.id] = load_subject(subject, [source], target, geometry=geometry, norm=norm)
    features = {sid: context_features(d) for sid, d in prepared.items()}
    per_subject = {}
    for sid, held in prepared.items():
        say(f"{sid} held out: fitting on {', '.join(o for o in prepared if o != sid)}")
        others = [d for o, d in prepared.items() if o != sid]
        scores, lesion = held_out_scores(held, others, features, seed)
        per_subject[sid] = {"scores": scores, "lesion_ml": lesion}
    summary = {"data": str(data), "source": source, "target": target,
               "normalisation": normalisation, "seed": seed, "subjects": per_subject,
               "mean": _means(per_subject), "wall_seconds": time.perf_counter() - tick}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(headroom_table(summary))
    return summary


def _means(subjects: dict[str, dict]) -> dict[str, dict[str, dict[str, float]]]:
    means: dict[str, dict[str, dict[str, float]]] = {}
    for method in METHODS:
        for region in REGIONS:
            values = [s["scores"][method][region] for s in subjects.values()
                      if region in s["scores"][method]]
            if values:
                means.setdefault(method, {})[region] = {
                    k: float(np.mean([v[k] for v in values])) for k in ("psnr", "ssim", "mae")}
    return means


_LABELS = {"lut": "LUT fitted on the others", "lut_own": "LUT fitted on the subject itself",
           "trees_intensity": "trees, intensity only", "trees_context": "trees, with context"}


def headroom_table(summary: dict[str, Any]) -> str:
    """Markdown: per subject and on average, each method's PSNR / SSIM inside the brain and
    its PSNR gain over the LUT fitted on the others (brain; brain without the lesion)."""
    ids = list(summary["subjects"])
    head = "| method | " + " | ".join(ids) + " | mean | Δ PSNR vs LUT (brain) | " \
           "Δ PSNR vs LUT (without lesion) |"
    lines = [head, "|" + "---|" * (len(ids) + 4)]
    for method in METHODS:
        cells = [f"{e['scores'][method]['brain']['psnr']:.2f} / "
                 f"{e['scores'][method]['brain']['ssim']:.3f}"
                 for e in summary["subjects"].values()]
        mean = summary["mean"][method]["brain"]
        gaps = ["(reference)"] * len(REGIONS) if method == "lut" else []
        for region in REGIONS if method != "lut" else ():
            deltas = [e["scores"][method][region]["psnr"] - e["scores"]["lut"][region]["psnr"]
                      for e in summary["subjects"].values() if region in e["scores"][method]]
            gaps.append(" / ".join(f"{d:+.2f}" for d in deltas)
                        + f" (mean {np.mean(deltas):+.2f})" if deltas else "")
        lines.append(f"| {_LABELS[method]} | " + " | ".join(cells)
                     + f" | {mean['psnr']:.2f} / {mean['ssim']:.3f} | " + " | ".join(gaps) + " |")
    return "\n".join(lines) + (
        f"\n\nPSNR (dB) / SSIM inside the brain, {summary['source']} -> {summary['target']}, "
        f"{summary['normalisation']} normalisation; each subject held out in turn "
        "(`mri2mri.benchmarks.generalisation.headroom`).\n")
