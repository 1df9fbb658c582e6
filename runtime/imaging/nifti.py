"""Load and validate NIfTI volumes; save them atomically.

Every failure is an `InputError` whose message names the file and the problem in
one line, so that the CLIs can print it and exit non-zero.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError, exception_summary

#: b-values at or below this count as b=0 (scanners write 0, 5 or 10 for "b=0").
B0_THRESHOLD = 50.0


def _open(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not a NIfTI file")
    try:
        img = nib.load(str(path))
    except (nib.filebasedimages.ImageFileError, ValueError) as exc:
        raise InputError(path, f"not a NIfTI image ({exception_summary(exc)})") from None
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InputError(path, f"corrupted or unreadable file ({exception_summary(exc)})") from None
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _read_data(img: nib.Nifti1Image, path: Path) -> np.ndarray:
    try:
        data = np.asarray(img.dataobj, dtype=np.float32)
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(path, f"corrupted or truncated data ({exception_summary(exc)})") from None
    # Drop trailing singleton axes (a 3D volume stored as X×Y×Z×1).
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def _check_values(data: np.ndarray, path: Path) -> None:
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        raise InputError(path, f"{bad} voxel(s) are NaN or infinite")
    if not np.any(data):
        raise InputError(path, "image is empty (all voxels are zero)")
    if float(data.max()) == float(data.min()):
        raise InputError(path, "image is constant: no foreground to work with")


def _check_affine(img: nib.Nifti1Image, path: Path) -> None:
    det = float(np.linalg.det(img.affine[:3, :3]))
    if not np.isfinite(det) or abs(det) < 1e-6:
        raise InputError(path, "affine is not invertible (zero or undefined voxel size)")


def image_like(reference: nib.Nifti1Image | nib.Nifti1Header, data: np.ndarray,
               description: str | None = None, *, dtype: np.dtype | type = np.float32
               ) -> nib.Nifti1Image:
    """`data` as a NIfTI image on `reference`'s grid: its affine, qform/sform codes and units.

    The one way new voxels get a header. `reference` is an image, or just its header
    (its best affine is then the grid). Both codes are copied as they are: they say
    which space the affine is in (scanner, aligned, a template), and the new voxels
    share the reference's space, so resetting them (or claiming "scanner") would be
    wrong. Scaling is dropped (the data are stored as they are, `dtype`, float32 by
    default), and so is the display range (cal_min/cal_max), which described the
    reference's intensities. `description` replaces the header's descrip (79 bytes).
    """
    header_in = reference if isinstance(reference, nib.Nifti1Header) else reference.header
    affine = header_in.get_best_affine() if isinstance(reference, nib.Nifti1Header) \
        else reference.affine
    header = nib.Nifti1Header.from_header(header_in)
    header.set_data_dtype(dtype)
    header.set_data_shape(data.shape)
    header["cal_min"] = header["cal_max"] = 0
    if description is not None:
        header["descrip"] = description.encode()[:79]
    out = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine, header)
    out.header.set_slope_inter(None, None)
    out.set_qform(header_in.get_qform(), code=int(header_in["qform_code"]))
    out.set_sform(header_in.get_sform(), code=int(header_in["sform_code"]))
    return out


def read_bvals(path: str | Path) -> np.ndarray:
    """Read an FSL-style .bval file (whitespace-separated numbers, one row)."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "b-value file not found")
    try:
        values = np.loadtxt(path, dtype=float, ndmin=1).ravel()
    except ValueError as exc:
        raise InputError(path, f"not a b-value file ({exception_summary(exc)})") from None
    if values.size == 0:
        raise InputError(path, "b-value file is empty")
    return values


def load_volume(path: str | Path, bvals: str | Path | Sequence[float] | None = None
                ) -> nib.Nifti1Image:
    """Load a 3D volume as float32, or the mean b=0 volume of a 4D DWI when b-values are given.

    The returned image keeps the file's affine, qform/sform codes and units.
    """
    path = Path(path)
    img = _open(path)
    _check_affine(img, path)
    data = _read_data(img, path)
    if data.ndim < 3:
        raise InputError(path, f"{data.ndim}D image of shape {data.shape}: a 3D volume is needed")
    if data.ndim > 4:
        raise InputError(path, f"{data.ndim}D image of shape {data.shape}: expected 3D or 4D")
    if data.ndim == 4:
        if bvals is None:
            raise InputError(path, f"4D image of shape {data.shape} without b-values: "
                                   "give the .bval file to pick its b=0 volumes")
        data = mean_b0(data, bvals, path)
    _check_values(data, path)
    return image_like(img, data)


def mean_b0(data: np.ndarray, bvals: str | Path | Sequence[float] | np.ndarray,
            path: str | Path) -> np.ndarray:
    """Average the b=0 volumes of a 4D series (b <= B0_THRESHOLD); `path` names it in errors."""
    values = read_bvals(bvals) if isinstance(bvals, (str, Path)) else np.asarray(bvals, float)
    if values.size != data.shape[3]:
        raise InputError(path, f"{data.shape[3]} volumes but {values.size} b-values")
    is_b0 = values <= B0_THRESHOLD
    if not is_b0.any():
        raise InputError(path, f"no b=0 volume (smallest b-value is {values.min():g})")
    return data[..., is_b0].mean(axis=3)


def save_volume(img: nib.Nifti1Image, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write `img` to `path` atomically (temporary file, then rename)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        nib.save(img, str(tmp))
    return Path(path)
