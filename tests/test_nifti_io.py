"""The one image-on-another's-header helper and the b=0 helpers (runtime/nifti.py)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like, load_volume, mean_b0, read_bvals


def _reference(qform_code: int = 1, sform_code: int = 4) -> nib.Nifti1Image:
    """An int16 image with scaling, a display range, distinct q/s forms and codes, and units."""
    affine = np.array([[-1.5, 0, 0, 90], [0, 1.2, 0.1, -120], [0, 0, 2.5, -60], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.arange(60, dtype=np.int16).reshape(3, 4, 5), affine)
    qform = affine.copy()
    qform[:3, 3] += 1.0  # a qform that differs from the sform, as scanners write
    img.set_qform(qform, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(2.0, 1.0)
    img.header["cal_min"], img.header["cal_max"] = 0, 119
    img.header["descrip"] = b"scanner"
    return img


@pytest.mark.parametrize("codes", [(1, 4), (2, 0), (0, 1)])
def test_image_like_keeps_grid_codes_and_units_through_a_file(tmp_path: Path, codes) -> None:
    ref = _reference(*codes)
    data = np.random.default_rng(0).random((3, 4, 5)) * 1000
    path = tmp_path / "out.nii.gz"
    nib.save(image_like(ref, data, "synthesized"), path)
    out = nib.load(path)
    assert out.get_data_dtype() == np.float32
    np.testing.assert_array_equal(out.get_fdata(), data.astype(np.float32))  # no scaling
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-6)
    for form in ("qform", "sform"):
        assert int(out.header[f"{form}_code"]) == int(ref.header[f"{form}_code"])
        np.testing.assert_allclose(getattr(out, f"get_{form}")(), getattr(ref, f"get_{form}")(),
                                   atol=1e-5)
    assert out.header.get_xyzt_units() == ("mm", "sec")
    assert out.header["descrip"].item() == b"synthesized"
    assert float(out.header["cal_max"]) == 0.0
    assert ref.header["descrip"].item() == b"scanner"  # the reference is not touched


def test_image_like_from_a_header_dtype_and_description() -> None:
    ref = _reference()
    out = image_like(ref.header, np.ones((3, 4, 5, 2)), dtype=np.int16)
    assert out.shape == (3, 4, 5, 2) and out.get_data_dtype() == np.int16
    np.testing.assert_allclose(out.affine, ref.header.get_best_affine())
    assert out.header["descrip"].item() == b"scanner"  # kept when no description is given
    assert image_like(ref, np.zeros((3, 4, 5)), "x" * 100).header["descrip"].item() == \
        b"x" * 79


def test_mean_b0_and_read_bvals(tmp_path: Path) -> None:
    data = np.stack([np.full((2, 2, 2), v, np.float32) for v in (10, 1, 30, 2)], axis=-1)
    bval = tmp_path / "dwi.bval"
    bval.write_text("0 1000 5 1000\n")
    np.testing.assert_array_equal(read_bvals(bval), [0, 1000, 5, 1000])
    np.testing.assert_allclose(mean_b0(data, bval, "dwi"), 20.0)
    np.testing.assert_allclose(mean_b0(data, [1000, 1000, 50, 1000], "dwi"), 30.0)
    with pytest.raises(InputError, match="no b=0 volume"):
        mean_b0(data, [1000] * 4, "dwi")
    with pytest.raises(InputError, match="4 volumes but 3 b-values"):
        mean_b0(data, [0, 0, 0], "dwi")
    bad = tmp_path / "bad.bval"
    bad.write_text("zero thousand\n")
    with pytest.raises(InputError, match="not a b-value file"):
        read_bvals(bad)


def test_load_volume_of_4d_keeps_the_header(tmp_path: Path) -> None:
    ref = _reference()
    base = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    dwi = nib.Nifti1Image(np.stack([base + 10, base, base + 30], -1), None, ref.header)
    nib.save(dwi, tmp_path / "dwi.nii.gz")
    b0 = load_volume(tmp_path / "dwi.nii.gz", [0, 1000, 0])
    np.testing.assert_allclose(b0.get_fdata(), base + 20.0)
    assert b0.get_data_dtype() == np.float32
    assert (int(b0.header["qform_code"]), int(b0.header["sform_code"])) == (1, 4)
