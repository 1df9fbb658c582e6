"""How `mri2mri.runtime.synthesis.ood.DISTANCE_THRESHOLD` was chosen: distances on held-out data.

Builds the training summary of a cohort's training split (T1w, as a T1w->T2w model
records it), then measures the distance of every held-out subject's T1w (should pass)
and of inputs a T1w model must not trust: the subject's T2w or PDw given as T1w, a
CT-like image, and the T1w under a heavy bias field (x0.2 to x5, or x0.33 to x3,
across the head).

    mri2mri-bench ood-threshold --data COHORT_DIR --out DIR    (DIR/ood_threshold.json)

Python: `threshold_distances(cohort_dir)`, `threshold_table(result)`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry
from mri2mri.runtime.metadata import Normalisation
from mri2mri.runtime.synthesis.ood import (
    DISTANCE_THRESHOLD,
    assess,
    combine_summaries,
    summarize_prepared,
)


def summary(img: nib.Nifti1Image) -> dict:
    prepared = prepare_sources([img], SliceGeometry(16), Normalisation(), names=["T1w"])
    return summarize_prepared(prepared, ["T1w"])


def ct_like(t1: nib.Nifti1Image) -> nib.Nifti1Image:
    """Hounsfield units + 1024 (a common storage): air 0, brain ~1064, CSF ~1034, skull ~2000."""
    data = np.asarray(t1.dataobj, dtype=np.float32)
    head = foreground_mask(data)
    brain = ndimage.binary_erosion(head, iterations=2)
    csf = head & (data < np.percentile(data[head], 20))
    ct = np.where(head, 1064.0, 0.0)
    ct[csf] = 1034.0
    ct[ndimage.binary_dilation(head, iterations=3) & ~brain & ~head] = 2000.0
    ct += np.random.default_rng(0).normal(0, 5, ct.shape) * (ct > 0)
    return nib.Nifti1Image(ct.astype(np.float32), t1.affine)


def heavy_bias(t1: nib.Nifti1Image, fold: float = 5.0) -> nib.Nifti1Image:
    """Multiply by a smooth field going from 1/fold to fold along the left-right axis."""
    data = np.asarray(t1.dataobj, dtype=np.float32)
    x = np.linspace(-1, 1, data.shape[0])[:, None, None]
    return nib.Nifti1Image((data * fold ** x).astype(np.float32), t1.affine)


def threshold_distances(cohort_dir: str | Path) -> dict[str, Any]:
    """The threshold and one row per input: label, subject, distance, flagged.

    The first row is the largest distance of a training subject from the training mean.
    """
    cohort = Cohort.discover(cohort_dir)
    train = [summary(s.load("T1w")) for s in cohort.split("train")]
    reference = combine_summaries(train)
    rows = [{"label": "training (max)", "subject": f"n={len(train)}",
             "distance": float(reference["contrasts"]["T1w"]["training_distance_max"]),
             "flagged": False}]
    for s in cohort.split("validation") + cohort.split("test"):
        t1 = s.load("T1w")
        cases = {"held-out T1w": t1, "T2w as T1w": s.load("T2w"), "PDw as T1w": s.load("PDw"),
                 "CT-like": ct_like(t1), "bias x0.2-x5": heavy_bias(t1),
                 "bias x0.33-x3": heavy_bias(t1, 3.0)}
        for label, img in cases.items():
            verdict = assess(summary(img), reference)
            rows.append({"label": label, "subject": s.id,
                         "distance": float(verdict.distances["T1w"]),
                         "flagged": bool(verdict.flagged)})
    return {"threshold": DISTANCE_THRESHOLD, "rows": rows}


def threshold_table(result: dict[str, Any]) -> str:
    """`threshold_distances`' result as the lines the command prints."""
    lines = [f"threshold {result['threshold']}"]
    lines += [f"{r['label']:16s} {r['subject']:8s} {r['distance']:.4f} "
              f"{'FLAGGED' if r['flagged'] else ''}".rstrip() for r in result["rows"]]
    return "\n".join(lines)
