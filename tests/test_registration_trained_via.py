"""`mri2mri-register --via` with a really trained b0 -> T1w model, end to end.

The other --via tests use a stand-in model to check the plumbing; this one trains
a small model on the session's demo cohort (about 40 s), exports it, and checks
that the synthesized image is T1w-like and that registering through it recovers a
known head motion of a held-out subject's b=0.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.benchmarks.registration.metrics import parameter_errors
from mri2mri.benchmarks.registration.motion import apply_motion, foreground_centre, rigid_matrix
from mri2mri.data.cohort import Cohort
from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.registration.cli import app
from mri2mri.runtime.registration.io import load_transform
from mri2mri.train.checkpoint import load_checkpoint
from mri2mri.train.config import TrainConfig
from mri2mri.train.trainer import train


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_via_a_trained_model_recovers_known_motion(demo_cohort: Path, tmp_path: Path) -> None:
    # Without the simulated prior: this checks the --via mechanics at a short budget (1,280
    # slices), where the prior's randomised subjects (most of the slices here) slow the
    # learning of the cohort's own mapping (synthesized-T1w correlation 0.45 with it).
    run = train(TrainConfig(data=str(demo_cohort), sources=["b0"], target="T1w",
                            out=str(tmp_path / "run"), epochs=8, slices_per_epoch=160,
                            batch_size=8, simulated_subjects=0))
    model = export_checkpoint(run.best_checkpoint, tmp_path / "b0_to_T1w.onnx").path
    held_out = load_checkpoint(run.best_checkpoint)["split"]["test"][0]
    subject = Cohort.discover(demo_cohort).subject(held_out)
    t1, b0 = subject.load("T1w"), subject.load("b0")
    centre = foreground_centre(b0)
    motion = rigid_matrix((0.05, -0.04, 0.06), (3.0, -2.5, 2.0), centre)
    nib.save(t1, tmp_path / "sub-x_T1w.nii.gz")
    nib.save(apply_motion(b0, motion), tmp_path / "sub-x_b0.nii.gz")
    out = tmp_path / "moving2static.txt"
    try:
        run_app(app, ["--moving", str(tmp_path / "sub-x_T1w.nii.gz"),
                      "--static", str(tmp_path / "sub-x_b0.nii.gz"), "--via", str(model),
                      "--out-affine", str(out), "--out-synthesized",
                      str(tmp_path / "synth.nii.gz")])
    except SystemExit as exc:
        assert not exc.code
    translation, angles = parameter_errors(load_transform(out), np.linalg.inv(motion), centre)
    assert np.abs(translation).max() < 1.0, translation
    assert np.abs(angles).max() < 0.01, angles

    # The intermediary really is T1w-like: on the unmoved grid it correlates with the
    # true T1w, while the b=0 itself is anti-correlated with it (CSF bright vs dark).
    synth_unmoved = nib.load(tmp_path / "synth.nii.gz")
    truth = resample_to(t1, b0).get_fdata()
    synth = apply_motion(synth_unmoved, np.linalg.inv(motion)).get_fdata()
    brain = foreground_mask(b0.get_fdata()) & (truth > 0)
    assert _corr(b0.get_fdata()[brain], truth[brain]) < 0
    assert _corr(synth[brain], truth[brain]) > 0.5
