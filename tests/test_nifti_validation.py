"""Every bad input the data layer is asked to reject gets a one-line error naming the file."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import load_volume, save_volume


def _save(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def _volume() -> np.ndarray:
    data = np.zeros((8, 8, 8), np.float32)
    data[2:6, 2:6, 2:6] = 100
    return data


def _expect(path: Path, pattern: str, **kw) -> None:
    with pytest.raises(InputError) as info:
        load_volume(path, **kw)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert pattern in message, message


def test_missing_file(tmp_path):
    _expect(tmp_path / "missing.nii.gz", "file not found")


def test_not_nifti(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("hello")
    with pytest.raises(InputError) as info:
        load_volume(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    txt = tmp_path / "table.csv"
    txt.write_text("a,b\n")
    _expect(txt, "not a NIfTI image")


def test_corrupted_gzip(tmp_path):
    good = _save(tmp_path / "good.nii.gz", np.random.default_rng(0).random((20, 20, 20)))
    raw = good.read_bytes()
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    _expect(bad, "corrupted")


def test_2d_image(tmp_path):
    _expect(_save(tmp_path / "flat.nii", np.ones((8, 8), np.float32)), "2D image")


def test_4d_without_bvals(tmp_path):
    _expect(_save(tmp_path / "dwi.nii.gz", np.ones((4, 4, 4, 3), np.float32)),
            "without b-values")


def test_4d_with_wrong_number_of_bvals(tmp_path):
    path = _save(tmp_path / "dwi.nii.gz", np.ones((4, 4, 4, 3), np.float32))
    _expect(path, "3 volumes but 2 b-values", bvals=[0, 1000])
    _expect(path, "no b=0 volume", bvals=[1000, 1000, 1000])


def test_nan_and_inf(tmp_path):
    data = _volume()
    data[1, 1, 1] = np.nan
    data[2, 2, 2] = np.inf
    _expect(_save(tmp_path / "nan.nii.gz", data), "2 voxel(s) are NaN or infinite")


def test_all_zero(tmp_path):
    _expect(_save(tmp_path / "zero.nii.gz", np.zeros((6, 6, 6), np.float32)), "all voxels are zero")


def test_singular_affine(tmp_path):
    aff = np.eye(4)
    aff[2, 2] = 0
    img = nib.Nifti1Image(_volume(), None)
    img.header.set_sform(aff, code=2)
    nib.save(img, str(tmp_path / "sing.nii.gz"))
    _expect(tmp_path / "sing.nii.gz", "affine is not invertible")


def test_trailing_singleton_axis_is_a_3d_volume(tmp_path):
    img = load_volume(_save(tmp_path / "v.nii.gz", _volume()[..., None]))
    assert img.shape == (8, 8, 8) and img.get_data_dtype() == np.float32


def test_good_volume_keeps_header(tmp_path):
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    img = nib.Nifti1Image(_volume().astype(np.int16), aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=4)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, str(tmp_path / "v.nii.gz"))
    loaded = load_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(loaded.affine, aff)
    assert int(loaded.header["qform_code"]) == 1 and int(loaded.header["sform_code"]) == 4
    assert loaded.header.get_xyzt_units() == ("mm", "sec")


def test_save_volume_is_atomic_and_refuses_overwrite(tmp_path):
    img = nib.Nifti1Image(_volume(), np.eye(4))
    out = save_volume(img, tmp_path / "out.nii.gz")
    assert out.exists() and [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]
    with pytest.raises(InputError, match="--overwrite"):
        save_volume(img, out)
    save_volume(img, out, overwrite=True)
    with pytest.raises(InputError, match="does not exist"):
        save_volume(img, tmp_path / "nodir" / "out.nii.gz")
    # A failing write leaves neither the target nor a temporary file behind.
    with pytest.raises((nib.spatialimages.HeaderDataError, ValueError, TypeError)):
        save_volume(nib.Nifti1Image(np.zeros((2, 2, 2), object), np.eye(4)), tmp_path / "x.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.nii.gz"]
    assert gzip.open(out).read(4)  # the kept file is a valid gzip stream
