"""Acquisition shifts of the demo cohort: a simulated other scanner, same subjects."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from mri2mri.data.cli import app
from mri2mri.data.simulate.demo_cohort import _tissue_signals, generate_cohort
from mri2mri.data.simulate.shift import AcquisitionShift
from mri2mri.data.simulate.tissue import LITERATURE_1P5T
from mri2mri.runtime.core.errors import InputError


def test_protocol_and_contrast_shifts_change_the_tissue_signals():
    base = _tissue_signals("T1w", LITERATURE_1P5T, AcquisitionShift())
    longer_ti = _tissue_signals("T1w", LITERATURE_1P5T,
                                AcquisitionShift.parse(["T1w.ti=1400"]))
    # A later inversion time lets GM recover closer to WM: less GM/WM contrast.
    assert longer_ti["gm"] / longer_ti["wm"] > base["gm"] / base["wm"] + 0.1
    for k in (0.5, 2.0):
        shifted = _tissue_signals("T1w", LITERATURE_1P5T,
                                  AcquisitionShift(gm_wm_contrast={"T1w": k}))
        assert np.log(shifted["gm"] / shifted["wm"]) == pytest.approx(
            k * np.log(base["gm"] / base["wm"]))
        assert shifted["wm"] == base["wm"] and shifted["csf"] == base["csf"]


@pytest.mark.parametrize(("items", "match"), [
    (["T1w.ti"], "CONTRAST.FIELD=VALUE"), (["FLAIR.ti=1"], "unknown contrast"),
    (["T1w.spin=1"], "unknown field"), (["T1w.snr=0"], "positive"),
    (["T1w.te=x"], "not a number")])
def test_bad_shifts_are_rejected(items, match):
    with pytest.raises(ValueError, match=match):
        AcquisitionShift.parse(items)


def test_shifted_cohort_keeps_subjects_and_other_contrasts(tmp_path: Path):
    kw = dict(subjects=1, seed=5, resolution=6.0, jobs=1)
    base = generate_cohort(tmp_path / "base", **kw)
    shift = AcquisitionShift.parse(["T1w.ti=1400", "T1w.snr=10", "T1w.bias_peak=0.3",
                                    "T1w.blur_fwhm_mm=8"])
    other = generate_cohort(tmp_path / "other", shift=shift, **kw)
    anat = Path("sub-001/anat")
    for name in ("sub-001_T2w.nii.gz", "sub-001_PDw.nii.gz"):  # untouched acquisitions
        assert (base / anat / name).read_bytes() == (other / anat / name).read_bytes()
    t1 = [np.asarray(nib.load(str(d / anat / "sub-001_T1w.nii.gz")).dataobj, float)
          for d in (base, other)]
    assert t1[0].shape == t1[1].shape and not np.array_equal(t1[0], t1[1])
    # Blur: neighbouring voxels are more alike in the shifted image.
    rough = [np.abs(np.diff(v, axis=0)).mean() / v.mean() for v in t1]
    assert rough[1] < rough[0]
    sidecar = json.loads((other / anat / "sub-001_T1w.json").read_text())
    assert sidecar["InversionTime"] == pytest.approx(1.4)
    desc = json.loads((other / "dataset_description.json").read_text())
    assert desc["SimulationParameters"]["shift"]["snr"] == {"T1w": 10.0}
    assert "shift" not in json.loads((base / "dataset_description.json").read_text())[
        "SimulationParameters"]


def test_cli_shift_option(tmp_path: Path):
    args = ["demo", str(tmp_path / "x"), "--subjects", "1", "--resolution", "6", "--jobs", "1",
            "--shift", "T1w.tx=3"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code != 0 and isinstance(done.exception, InputError)
    assert "unknown field 'tx'" in str(done.exception) and not (tmp_path / "x").exists()
