"""The one-command demo, end to end on a tiny cohort (the real run is in the README)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np

from mri2mri.data.cohort import Cohort
from mri2mri.demo import run_demo


def test_demo_end_to_end(tmp_path):
    result = run_demo(tmp_path / "demo", subjects=4, resolution=5.0, epochs=1,
                      slices_per_epoch=32, batch_size=8)
    report = result.report.read_text()
    for method in ("mri2mri (as written)", "mri2mri (gain-matched)", "LUT baseline"):
        assert method in report
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo" / "model.onnx").exists()
    # The synthesized image lives on the held-out subject's T1w grid.
    source = Cohort.discover(tmp_path / "demo" / "data").subject(result.subject).load("T1w")
    synth = nib.load(str(result.synthesized))
    assert synth.shape == source.shape
    np.testing.assert_allclose(synth.affine, source.affine)
    assert all(np.isfinite(v["psnr"]) for v in result.metrics.values())
    # A second run into the same folder is refused rather than mixing outputs.
    again = subprocess.run([sys.executable, "-m", "mri2mri.demo.cli", str(tmp_path / "demo")],
                           capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr
