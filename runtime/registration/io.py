"""Write and read registration transforms: a plain 4x4 matrix and ITK/ANTs text.

Both files describe the same map, in the direction resampling needs: a point of
the STATIC (fixed) image's world space -> the corresponding point of the MOVING
image's world space.

- Plain matrix (``moving2static.txt``): 4 rows of 4 numbers, RAS+ world mm
  (NIfTI/nibabel/DIPY convention); `numpy.loadtxt` reads it.
- ITK text (``AffineTransform_double_3_3``): the same map in ITK's LPS world
  (x and y negated), as `antsApplyTransforms -r static -i moving -t FILE` and
  `ants.apply_transforms(fixed=static, moving=moving, transformlist=[FILE])` use it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError

#: RAS+ <-> LPS+: negate x and y. It is its own inverse.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ITK_TRANSFORM_TYPE = "AffineTransform_double_3_3"


def _check_affine(affine: np.ndarray) -> np.ndarray:
    affine = np.asarray(affine, dtype=float)
    if affine.shape != (4, 4) or not np.allclose(affine[3], [0, 0, 0, 1]):
        raise ValueError(f"expected a 4x4 affine with last row 0 0 0 1, got {affine.shape}")
    return affine


def matrix_text(affine: np.ndarray) -> str:
    """The plain 4x4 form, with a header comment saying which way it maps."""
    affine = _check_affine(affine)
    rows = "\n".join(" ".join(f"{v: .10f}" for v in row) for row in affine)
    return ("# mri2mri registration: 4x4 world (RAS+ mm) affine mapping a STATIC-image point\n"
            "# to the corresponding MOVING-image point (DIPY AffineMap convention)\n" + rows + "\n")


def itk_text(affine: np.ndarray) -> str:
    """ITK/ANTs text form (LPS, fixed=static -> moving), centre of rotation at the origin."""
    lps = RAS_TO_LPS @ _check_affine(affine) @ RAS_TO_LPS
    params = list(lps[:3, :3].ravel()) + list(lps[:3, 3])
    return ("#Insight Transform File V1.0\n#Transform 0\n"
            f"Transform: {ITK_TRANSFORM_TYPE}\n"
            "Parameters: " + " ".join(f"{v:.12g}" for v in params) + "\n"
            "FixedParameters: 0 0 0\n")


def parse_matrix(text: str, source: str = "matrix") -> np.ndarray:
    """Read the plain 4x4 form (comments allowed)."""
    rows = [line.split() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]
    try:
        values = np.array(rows, dtype=float)
    except ValueError:
        raise InputError(source, "not a 4x4 matrix of numbers") from None
    if values.shape != (4, 4):
        raise InputError(source, f"expected 4 rows of 4 numbers, found shape {values.shape}")
    return values


def parse_itk(text: str, source: str = "ITK transform") -> np.ndarray:
    """Read an ITK affine/rigid text transform back into the RAS+ static->moving matrix.

    ITK maps x -> M (x - c) + c + t with `c` the fixed parameters (centre).
    """
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if ":" in line and not line.startswith("#"):
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()
    kind = fields.get("Transform", "")
    if not kind.startswith(("AffineTransform", "MatrixOffsetTransformBase")) \
            or not kind.endswith("_3_3"):
        raise InputError(source, f"unsupported ITK transform type {kind or '(none)'!r}; "
                                 "expected a 3D AffineTransform")
    try:
        params = np.array(fields["Parameters"].split(), dtype=float)
        centre = np.array(fields.get("FixedParameters", "0 0 0").split(), dtype=float)
    except (KeyError, ValueError):
        raise InputError(source, "missing or malformed Parameters/FixedParameters") from None
    if params.size != 12 or centre.size != 3:
        raise InputError(source, f"expected 12 parameters and 3 fixed parameters, found "
                                 f"{params.size} and {centre.size}")
    return affine_from_itk(params, centre)


def affine_from_itk(parameters: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """ITK affine parameters (9 matrix + 3 translation, LPS) and centre -> RAS+ 4x4 matrix."""
    params = np.asarray(parameters, float).ravel()
    centre = np.asarray(centre, float).ravel()
    lps = np.eye(4)
    lps[:3, :3] = params[:9].reshape(3, 3)
    lps[:3, 3] = params[9:12] + centre - lps[:3, :3] @ centre
    return RAS_TO_LPS @ lps @ RAS_TO_LPS


def save_matrix(affine: np.ndarray, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the plain 4x4 form atomically."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(matrix_text(affine))
    return Path(path)


def save_itk(affine: np.ndarray, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write the ITK/ANTs text form atomically (use a ``.txt`` name for ANTs)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        tmp.write_text(itk_text(affine))
    return Path(path)


def load_transform(path: str | Path) -> np.ndarray:
    """Read either form from a file (the ITK header decides) as the RAS+ static->moving matrix."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "transform file not found")
    text = path.read_text()
    if text.startswith("#Insight Transform File"):
        return parse_itk(text, str(path))
    return parse_matrix(text, str(path))
