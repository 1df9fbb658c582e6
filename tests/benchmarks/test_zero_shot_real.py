"""`mri2mri-bench zero-shot` on real scans (../shared/real-t1t2, cropped to a slab to stay
cheap): skipped, saying why, where that folder is absent. The data are never copied into
the repository; the crop lives in the test's temporary folder."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from test_zero_shot import negator

from mri2mri.benchmarks.cli import app

SUBJECTS = ("sub-01", "sub-04")
#: Axial slices kept around each volume's middle.
SLAB = 24


@pytest.fixture(scope="module")
def real_slab(shared_dir, tmp_path_factory):
    real = shared_dir / "real-t1t2"
    if not all((real / s / "anat" / f"{s}_T2w.nii.gz").is_file() for s in SUBJECTS):
        pytest.skip(f"real T1w/T2w pairs not found in {real}: the synthetic cohort of "
                    "test_zero_shot.py covers the same paths")
    out = tmp_path_factory.mktemp("real-slab")
    for sid in SUBJECTS:
        anat = out / sid / "anat"
        anat.mkdir(parents=True)
        for contrast in ("T1w", "T2w"):
            image = nib.load(real / sid / "anat" / f"{sid}_{contrast}.nii.gz")
            middle = image.shape[2] // 2
            nib.save(image.slicer[:, :, middle - SLAB // 2: middle + SLAB // 2],
                     anat / f"{sid}_{contrast}.nii.gz")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source,target", [("T1w", "T2w"), ("T2w", "T1w")])
def test_zero_shot_on_real_scans(real_slab, tmp_path, source, target):
    model = negator(tmp_path / "model.onnx", source, target)  # a stand-in, never trained
    out = tmp_path / "out"
    assert exit_code(app, ["zero-shot", "--model", str(model), "--real", str(real_slab),
                           "--out", str(out), "--source", source, "--target", target,
                           "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["subjects"]) == set(SUBJECTS)
    for entry in summary["subjects"].values():
        for method, regions in entry["scores"].items():
            for scores in regions.values():
                assert 3 < scores["level_free_psnr"] < 40, method
                assert -1 <= scores["level_free_ssim"] <= 1
        brain = {m: r["brain"]["level_free_psnr"] for m, r in entry["scores"].items()}
        assert brain["lut_own"] >= brain["lut_others"] - 1e-9  # the per-intensity ceiling
        assert entry["region_ml"]["brain"] > 100 and np.isfinite(entry["lesion_ml"])
