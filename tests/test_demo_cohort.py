"""The simulated demo cohort: BIDS layout, physics sanity, world alignment, determinism."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.train.cohort import Cohort
from mri2mri.train.data.demo_cohort import generate_cohort


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_layout_and_files_load(demo_cohort: Path):
    cohort = Cohort.discover(demo_cohort)
    assert len(cohort.subjects) == 6
    desc = json.loads((demo_cohort / "dataset_description.json").read_text())
    assert desc["SimulatedPhantom"] is True and desc["DatasetType"] == "raw"
    assert desc["SimulationParameters"]["snr"]["T1w"] > 0
    for sub in cohort.subjects:
        assert sub.contrasts == ["PDw", "T1w", "T2w", "b0"]
        anat = [nib.load(str(sub.path(c))) for c in ("T1w", "T2w", "PDw")]
        assert all(a.shape == anat[0].shape and np.allclose(a.affine, anat[0].affine)
                   for a in anat)
        dwi = nib.load(str(sub.path("b0")))
        assert dwi.ndim == 4 and dwi.shape[:3] != anat[0].shape
        bvals = np.loadtxt(sub.bvals)
        bvecs = np.loadtxt(sub.bvals.with_suffix(".bvec"))
        assert bvals.size == dwi.shape[3] and bvecs.shape == (3, dwi.shape[3])
        assert (bvals == 0).sum() >= 1
        np.testing.assert_allclose(np.linalg.norm(bvecs[:, bvals > 0], axis=0), 1, atol=1e-5)
        assert (sub.path("T1w").with_name(f"{sub.id}_T1w.json")).exists()


def test_contrasts_behave_like_mri(demo_cohort: Path):
    for sub in Cohort.discover(demo_cohort).subjects:
        t1, t2, pd = (sub.load(c).get_fdata() for c in ("T1w", "T2w", "PDw"))
        brain = foreground_mask(t2) & foreground_mask(t1)
        assert _corr(t1[brain], t2[brain]) < -0.3
        assert _corr(pd[brain], t2[brain]) > 0.3


def test_subjects_differ(demo_cohort: Path):
    subs = Cohort.discover(demo_cohort).subjects
    a, b = (s.load("T1w").get_fdata() for s in subs[:2])
    assert a.shape == b.shape and _corr(a, b) < 0.97


def test_dwi_is_world_aligned_with_anatomy(demo_cohort: Path):
    """The b=0 (T2-like) resampled onto the anatomical grid matches the T2w there."""
    sub = Cohort.discover(demo_cohort).subjects[0]
    t2 = sub.load("T2w")
    b0 = resample_to(sub.load("b0"), t2)
    covered = (b0.get_fdata() > 0) & foreground_mask(t2.get_fdata())
    assert covered.sum() > 1000
    aligned = _corr(b0.get_fdata()[covered], t2.get_fdata()[covered])
    shifted = _corr(np.roll(b0.get_fdata(), 3, axis=0)[covered], t2.get_fdata()[covered])
    assert aligned > 0.6 and aligned > shifted + 0.1


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_different_seed_differs(tmp_path: Path):
    kw = dict(subjects=2, resolution=5.0)
    a = _digest(generate_cohort(tmp_path / "a", seed=3, jobs=1, **kw))
    b = _digest(generate_cohort(tmp_path / "b", seed=3, jobs=2, **kw))
    c = _digest(generate_cohort(tmp_path / "c", seed=4, jobs=1, **kw))
    assert a == b
    assert a.keys() == c.keys()
    assert a["sub-001/anat/sub-001_T1w.nii.gz"] != c["sub-001/anat/sub-001_T1w.nii.gz"]


def test_cli_preview_and_refusals(tmp_path: Path):
    out = tmp_path / "ds"
    cmd = [sys.executable, "-m", "mri2mri.train.data.cli", "demo", str(out), "--subjects", "1",
           "--resolution", "6", "--preview", "--jobs", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    png = (out / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from bids_validation import bids_errors

    assert bids_errors(out) == []  # the preview is .bidsignore'd
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    assert again.stderr.count("\n") == 1
    missing = subprocess.run(cmd[:4] + [str(tmp_path / "no" / "ds")], capture_output=True,
                             text=True)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.parametrize("bad", [["--subjects", "0"], ["--resolution", "0.1"]])
def test_cli_rejects_bad_parameters(tmp_path: Path, bad: list[str]):
    done = subprocess.run([sys.executable, "-m", "mri2mri.train.data.cli", "demo",
                           str(tmp_path / "x"), *bad], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error:")
    assert not (tmp_path / "x").exists()


def test_demo_cohort_is_valid_bids(demo_cohort: Path):
    """The official validator (bids-validator-deno) finds no error in the cohort."""
    from bids_validation import bids_errors

    assert (demo_cohort / "README.md").is_file()
    assert bids_errors(demo_cohort) == []
