"""Put a subject's anatomical images on one grid: T2/PD's (one dual-echo acquisition).

T2 and PD share a grid by construction, so they are only checked; T1 and MRA are
separate acquisitions (the head may have moved between them), so they are
registered rigidly with mutual information (`mri2mri.runtime.registration`) to the
reference and resliced onto its grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from mri2mri.runtime.imaging.resample import same_grid

if TYPE_CHECKING:
    from mri2mri.runtime.registration import RegistrationSettings

#: Preference order for the grid every anatomical contrast is put on.
REFERENCE_ORDER = ("T2w", "PDw", "T1w", "angio")


@dataclass
class AlignedAnatomy:
    """Anatomical images on the reference's grid, and how each got there."""

    reference: str
    images: dict[str, nib.Nifti1Image]
    transforms: dict[str, dict] = field(default_factory=dict)


def _motion(affine: np.ndarray) -> dict:
    """Rotation angle (degrees) and translation (mm) of a rigid world transform."""
    cos = np.clip((np.trace(affine[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return {"rotation_deg": round(float(np.degrees(np.arccos(cos))), 3),
            "translation_mm": round(float(np.linalg.norm(affine[:3, 3])), 3)}


def align_anatomy(images: dict[str, tuple[nib.Nifti1Image, str]],
                  settings: str | RegistrationSettings = "fast") -> AlignedAnatomy:
    """Register and reslice (contrast -> (image, file name)) onto one reference grid.

    Raises ValueError for T2 and PD on different grids: they come from one
    acquisition, so a mismatch means mixed-up or damaged files.
    """
    from mri2mri.runtime.registration import register_images

    if not images:
        raise ValueError("no anatomical images")
    ref_name = next(c for c in REFERENCE_ORDER if c in images)
    ref, ref_file = images[ref_name]
    if "T2w" in images and "PDw" in images:
        pd, pd_file = images["PDw"]
        if not same_grid(pd, ref):
            raise ValueError(f"conflicting grids: {ref_file} {ref.shape[:3]} and {pd_file} "
                             f"{pd.shape[:3]} come from one dual-echo acquisition but their "
                             "shapes or affines differ")
    out = {ref_name: ref}
    transforms: dict[str, dict] = {ref_name: {"method": "reference grid", "file": ref_file}}
    for contrast, (img, name) in images.items():
        if contrast == ref_name:
            continue
        if contrast == "PDw" and ref_name == "T2w":
            out[contrast] = img
            transforms[contrast] = {"method": "same dual-echo grid as T2", "file": name}
            continue
        reg = register_images(img, ref, transform="rigid", settings=settings)
        out[contrast] = reg.resample(img, order=3)
        transforms[contrast] = {
            "method": f"rigid mutual-information registration to {ref_name} "
                      f"(DIPY, '{reg.settings}' settings), cubic reslicing",
            "file": name,
            "static_to_moving_world": np.round(reg.affine, 6).tolist(),
            "seconds": round(reg.seconds, 2),
            **_motion(reg.affine),
        }
    return AlignedAnatomy(ref_name, out, transforms)
