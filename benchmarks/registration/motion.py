"""Known rigid head motion: sample it, express it as a matrix, apply it to an image.

A motion `M` (4x4, world RAS+ mm) moves the head: the tissue at point p goes to
M p. The moved image is I'(y) = I(M^-1 y) on the original grid, as if the
participant had moved between the two scans.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.normalize import foreground_mask

#: Defaults: plausible motion of a cooperative adult between a T1w and a DWI scan of one
#: session, and the range that pipelines must recover (a few degrees about any axis,
#: a few mm along any axis; larger head turns are uncommon inside a head coil).
DEFAULT_MAX_ROTATION_DEG = 5.0
DEFAULT_MAX_TRANSLATION_MM = 5.0


@dataclass(frozen=True)
class Motion:
    """Rotation angles (rad, extrinsic x-y-z) about `centre` and a translation (mm)."""

    angles: tuple[float, float, float]
    translation: tuple[float, float, float]
    centre: tuple[float, float, float]

    @property
    def matrix(self) -> np.ndarray:
        return rigid_matrix(self.angles, self.translation, self.centre)

    def as_dict(self) -> dict[str, list[float]]:
        return {"angles_rad": list(self.angles), "translation_mm": list(self.translation),
                "centre_mm": list(self.centre)}


def rigid_matrix(angles: np.ndarray | tuple[float, ...], translation: np.ndarray | tuple,
                 centre: np.ndarray | tuple = (0.0, 0.0, 0.0)) -> np.ndarray:
    """x -> R (x - c) + c + t as a 4x4 matrix (R from extrinsic x-y-z angles in rad)."""
    rot = Rotation.from_euler("xyz", np.asarray(angles, float)).as_matrix()
    c = np.asarray(centre, float)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = c - rot @ c + np.asarray(translation, float)
    return out


def foreground_centre(img: nib.spatialimages.SpatialImage) -> np.ndarray:
    """World coordinates of the foreground's centroid: the pivot of head rotations."""
    mask = foreground_mask(np.asarray(img.dataobj, dtype=np.float32))
    return nib.affines.apply_affine(img.affine, np.argwhere(mask).mean(0))


def sample_motion(rng: np.random.Generator, centre: np.ndarray,
                  max_rotation_deg: float = DEFAULT_MAX_ROTATION_DEG,
                  max_translation_mm: float = DEFAULT_MAX_TRANSLATION_MM) -> Motion:
    """Uniform in [-max, max] for each of the three angles and three translations."""
    angles = rng.uniform(-1, 1, 3) * np.deg2rad(max_rotation_deg)
    translation = rng.uniform(-1, 1, 3) * max_translation_mm
    return Motion(tuple(float(a) for a in angles), tuple(float(t) for t in translation),
                  tuple(float(c) for c in centre))


def apply_motion(img: nib.spatialimages.SpatialImage, motion: np.ndarray,
                 order: int = 1) -> nib.Nifti1Image:
    """The image after the head moved by `motion`, on the same grid (zero where nothing came in)."""
    vox = np.linalg.inv(img.affine) @ np.linalg.inv(motion) @ img.affine
    data = np.asarray(img.dataobj, dtype=np.float32)
    out = ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], order=order,
                                   mode="constant", cval=0.0)
    if order > 1:
        np.maximum(out, 0, out=out)
    return image_like(img, out)


def shift_header(img: nib.spatialimages.SpatialImage, transform: np.ndarray) -> nib.Nifti1Image:
    """The same voxels with the world placement changed by `transform` (a header-only move)."""
    out = image_like(img, np.asarray(img.dataobj, dtype=np.float32))
    out.set_qform(transform @ img.affine)
    out.set_sform(transform @ img.affine)
    return out
