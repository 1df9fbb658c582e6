"""Inputs a model's out-of-distribution checks must sort (`mri2mri-bench ood-calibration`).

Real scans of the model's source contrast (must not warn where the model does well); wrong
contrasts (the pair's other contrast, a DWI's b=0 mean given as the source); and inputs the
simulator does not cover, made from a real scan: a CT-like image
(`mri2mri.benchmarks.ood.threshold.ct_like`), a contrast-enhanced T1w (`contrast_enhanced`),
a FLAIR-like image (`flair_like`) and a cylindrical water QA phantom (`phantom`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.nifti import load_volume

from .threshold import ct_like

#: Which inputs a check should warn on: "no" for real scans of the source contrast.
WARN_EXPECTED = {"real": "no", "wrong contrast": "yes", "uncovered": "yes"}


@dataclass
class Case:
    """One input: what it is, its kind (a key of `WARN_EXPECTED`), the subject, the image."""

    label: str
    kind: str
    subject: str
    image: nib.Nifti1Image


def contrast_enhanced(t1: nib.Nifti1Image, seed: int = 1) -> nib.Nifti1Image:
    """A T1w after gadolinium, roughly: enhancing dura (the brain's outer 2-voxel shell),
    thin vessels, two choroid-plexus blobs and a ring-enhancing lesion (12 mm necrotic
    core, 3 mm wall), at 1.5-1.8 times the brain's 99th percentile."""
    d = np.asarray(t1.dataobj, dtype=np.float32).copy()
    brain = d > 0
    ref = float(np.percentile(d[brain], 99))
    rng = np.random.default_rng(seed)
    shell = brain & ~ndimage.binary_erosion(brain, iterations=2)
    d[shell] = 1.6 * ref * (0.9 + 0.2 * rng.random(int(shell.sum())))
    noise = ndimage.gaussian_filter(rng.standard_normal(d.shape), 3)
    d[(np.abs(noise) < 0.004) & brain] = 1.5 * ref
    centre = np.array(ndimage.center_of_mass(brain))
    grid = np.indices(d.shape)
    for offset in ((-12, 5, 5), (12, 5, 5)):
        blob = sum((g - c) ** 2 for g, c in zip(grid, centre + offset, strict=True)) < 16
        d[blob & brain] = 1.7 * ref
    r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre + (25, -20, 10), strict=True)))
    d[(r < 12) & brain] = 0.35 * ref
    d[(r >= 12) & (r < 15) & brain] = 1.8 * ref
    return nib.Nifti1Image(d, t1.affine, t1.header)


def flair_like(t2: nib.Nifti1Image) -> nib.Nifti1Image:
    """A FLAIR-like image from a skull-stripped T2w: its CSF (the brightest 15 % of the
    brain) nulled, the rest kept."""
    d = np.asarray(t2.dataobj, dtype=np.float32).copy()
    brain = d > 0
    high = float(np.percentile(d[brain], 85))
    csf = brain & (d > high)
    d[csf] = 0.15 * high + 0.05 * d[csf]
    return nib.Nifti1Image(d, t2.affine, t2.header)


def phantom(shape: tuple[int, int, int] = (240, 240, 155), seed: int = 0) -> nib.Nifti1Image:
    """A cylindrical water QA phantom at 1 mm: 190 mm wide, 120 mm tall, four 24 mm inserts
    (0.3, 0.6, 1.4 and 1.8 times the water signal), Rician noise."""
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(shape, dtype=np.float32)
    cx, cy, cz = (np.array(shape) - 1) / 2
    d = np.where((np.hypot(x - cx, y - cy) < 95) & (np.abs(z - cz) < 60), 1000.0, 0.0)
    for ox, oy, value in ((40, 0, 600), (-40, 0, 1400), (0, 40, 300), (0, -40, 1800)):
        d[(np.hypot(x - cx - ox, y - cy - oy) < 12) & (d > 0)] = value
    d = np.hypot(d + rng.normal(0, 20, shape), rng.normal(0, 20, shape))
    return nib.Nifti1Image(d.astype(np.float32), np.eye(4))


def _anat(real: Path, sid: str, contrast: str) -> Path:
    return real / sid / "anat" / f"{sid}_{contrast}.nii.gz"


def b0_mean(dwi_dir: Path, sid: str) -> nib.Nifti1Image | None:
    """A subject's DWI's b=0 mean (``sub/dwi/sub_dwi.nii.gz`` with its .bval), or None."""
    dwi = dwi_dir / sid / "dwi" / f"{sid}_dwi.nii.gz"
    if not dwi.exists():
        return None
    return load_volume(dwi, dwi.with_name(f"{sid}_dwi.bval"))


def cases(real: Path, source: str, subjects: list[str], *, wrong: list[str],
          dwi: Path | None = None) -> list[Case]:
    """Every input for a model of `source`: each subject's real scan, its `wrong` contrasts
    and b=0 (from `dwi`, a pseudo-DWI folder) given as the source, and one of each
    uncovered input (made from the first subject with a T1w, and with a T2w)."""
    found = [Case(f"real {source}", "real", s, load_volume(_anat(real, s, source)))
             for s in subjects if _anat(real, s, source).exists()]
    for s in subjects:
        for c in wrong:
            if c != source and _anat(real, s, c).exists():
                found.append(Case(f"{c} as {source}", "wrong contrast", s,
                                  load_volume(_anat(real, s, c))))
        b0 = b0_mean(dwi, s) if dwi is not None and source != "b0" else None
        if b0 is not None:
            found.append(Case(f"b=0 as {source}", "wrong contrast", s, b0))
    t1 = next((s for s in subjects if _anat(real, s, "T1w").exists()), None)
    t2 = next((s for s in subjects if _anat(real, s, "T2w").exists()), None)
    if t1 is not None:
        image = load_volume(_anat(real, t1, "T1w"))
        found.append(Case("CT-like", "uncovered", t1, ct_like(image)))
        found.append(Case("contrast-enhanced T1w", "wrong contrast" if source != "T1w"
                          else "uncovered", t1, contrast_enhanced(image)))
    if t2 is not None:
        found.append(Case("FLAIR-like", "uncovered", t2,
                          flair_like(load_volume(_anat(real, t2, "T2w")))))
    found.append(Case("water phantom", "uncovered", "-", phantom()))
    return found
