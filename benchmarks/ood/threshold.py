"""How `mri2mri.runtime.synthesis.ood.DISTANCE_THRESHOLD` was chosen: distances on held-out data.

Builds the training summary of a cohort's training split (T1w, as a T1w->T2w model
records it), then prints the distance of every held-out subject's T1w (should pass)
and of inputs a T1w model must not trust: the subject's T2w or PDw given as T1w, a
CT-like image, and the T1w under a heavy bias field (x0.2 to x5, or x0.33 to x3,
across the head).

    python -m mri2mri.benchmarks.ood.threshold COHORT_DIR
"""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
from scipy import ndimage

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
from mri2mri.train.cohort import Cohort


def summary(img: nib.Nifti1Image) -> dict:
    prepared = prepare_sources([img], SliceGeometry(16), Normalisation(), ["T1w"])
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


def distances(cohort_dir: str) -> list[tuple[str, str, float, bool]]:
    cohort = Cohort.discover(cohort_dir)
    train = [summary(s.load("T1w")) for s in cohort.split("train")]
    reference = combine_summaries(train)
    rows = [("training (max)", f"n={len(train)}",
             reference["contrasts"]["T1w"]["training_distance_max"], False)]
    for s in cohort.split("validation") + cohort.split("test"):
        t1 = s.load("T1w")
        cases = {"held-out T1w": t1, "T2w as T1w": s.load("T2w"), "PDw as T1w": s.load("PDw"),
                 "CT-like": ct_like(t1), "bias x0.2-x5": heavy_bias(t1),
                 "bias x0.33-x3": heavy_bias(t1, 3.0)}
        for label, img in cases.items():
            verdict = assess(summary(img), reference)
            rows.append((label, s.id, verdict.distances["T1w"], verdict.flagged))
    return rows


def main() -> None:
    rows = distances(sys.argv[1])
    print(f"threshold {DISTANCE_THRESHOLD}")
    for label, sid, d, flagged in rows:
        print(f"{label:16s} {sid:8s} {d:.4f} {'FLAGGED' if flagged else ''}")


if __name__ == "__main__":
    main()
