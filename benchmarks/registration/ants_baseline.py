"""ANTs rigid registration (ANTsPy), the baseline a diffusion pipeline would use.

Settings, modelled on the rigid stage that antsRegistrationSyN.sh and QSIPrep-style
b=0 -> anatomical coregistration use: centre-of-mass initialisation, Rigid[0.25],
Mattes mutual information with 32 bins and regular sampling of 25 % of the
voxels, 4 levels (shrink 8x4x2x1, smoothing 3x2x1x0 voxels) with
1000x500x250x100 iterations, one ITK thread per registration (like DIPY here).
ANTsPy (`antspyx`) is an optional extra (`pip install "mri2mri[ants]"`).
"""

from __future__ import annotations

import os
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version

import nibabel as nib
import numpy as np

from mri2mri.runtime.registration.io import RAS_TO_LPS, affine_from_itk

ANTS_SETTINGS: dict[str, object] = {
    "type_of_transform": "Rigid",
    "aff_metric": "mattes",
    "aff_sampling": 32,
    "aff_random_sampling_rate": 0.25,
    "aff_iterations": (1000, 500, 250, 100),
    "aff_shrink_factors": (8, 4, 2, 1),
    "aff_smoothing_sigmas": (3, 2, 1, 0),
}
ANTS_THREADS = 1


def ants_version() -> str | None:
    """The installed antspyx version, or None when the optional extra is missing."""
    try:
        return version("antspyx")
    except PackageNotFoundError:
        return None


def available() -> bool:
    return ants_version() is not None


def to_ants(img: nib.spatialimages.SpatialImage):  # noqa: ANN201 (ants is optional)
    """A nibabel image as an ANTsImage with the same world placement (ITK's LPS convention)."""
    import ants

    lps = RAS_TO_LPS @ img.affine
    spacing = nib.affines.voxel_sizes(lps)
    direction = lps[:3, :3] / spacing
    data = np.asarray(img.dataobj, dtype=np.float32)
    return ants.from_numpy(data, origin=[float(v) for v in lps[:3, 3]],
                           spacing=[float(v) for v in spacing], direction=direction)


def ants_register(moving: nib.spatialimages.SpatialImage,
                  static: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, float]:
    """Rigid ANTs registration; returns (static->moving RAS+ affine, DIPY's convention; seconds)."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(ANTS_THREADS)
    import ants

    fixed, mov = to_ants(static), to_ants(moving)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mri2mri-ants-") as tmp:
        result = ants.registration(fixed=fixed, moving=mov, outprefix=os.path.join(tmp, "r_"),
                                   **ANTS_SETTINGS)
        transform = ants.read_transform(result["fwdtransforms"][0])
        affine = affine_from_itk(np.asarray(transform.parameters),
                                 np.asarray(transform.fixed_parameters))
    return affine, time.perf_counter() - start
