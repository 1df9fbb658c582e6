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

from mri2mri.data.cohort import Cohort
from mri2mri.data.simulate.demo_cohort import generate_cohort
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.imaging.resample import resample_to


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
    cmd = [sys.executable, "-m", "mri2mri.data.cli", "demo", str(out), "--subjects", "1",
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
    done = subprocess.run([sys.executable, "-m", "mri2mri.data.cli", "demo",
                           str(tmp_path / "x"), *bad], capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith("error:")
    assert not (tmp_path / "x").exists()


def test_demo_cohort_is_valid_bids(demo_cohort: Path):
    """The official validator (bids-validator-deno) finds no error in the cohort."""
    from bids_validation import bids_errors

    assert (demo_cohort / "README.md").is_file()
    assert bids_errors(demo_cohort) == []


@pytest.fixture(scope="module")
def head_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One subject with a head and the EPI read-out at 3 mm, made through the command."""
    from typer.testing import CliRunner

    from mri2mri.data.cli import app

    out = tmp_path_factory.mktemp("head") / "ds"
    done = CliRunner().invoke(app, ["demo", str(out), "--subjects", "1", "--resolution", "3",
                                    "--jobs", "1", "--head", "--epi"])
    assert done.exit_code == 0, done.output
    return out


def _head_fractions(img: nib.Nifti1Image) -> dict[str, np.ndarray]:
    """Subject 1's tissue fractions (seed 0, 3 mm, head) at every voxel of `img`."""
    from mri2mri.data.simulate.demo_cohort import DemoConfig, load_template, subject_anatomy
    from mri2mri.data.simulate.epi import EpiProtocol
    from mri2mri.data.simulate.fields import grid_points
    from mri2mri.data.simulate.head import HeadLayers

    cfg = DemoConfig(subjects=1, seed=0, resolution=3.0, head=HeadLayers(), epi=EpiProtocol())
    _, _, anatomy = subject_anatomy(load_template(cfg.head), cfg, 0)
    points = grid_points(img.shape[:3], img.affine)
    return {k: v.reshape(img.shape[:3]) for k, v in anatomy.fractions(points).items()}


def test_head_fat_bright_on_t1w_skull_dark_everywhere(head_cohort: Path, demo_cohort: Path):
    sub = Cohort.discover(head_cohort).subjects[0]
    t1 = sub.load("T1w")
    frac = _head_fractions(t1)
    fat, bone, wm = frac["fat"] > 0.6, frac["bone"] > 0.8, frac["wm"] > 0.9
    assert min(fat.sum(), bone.sum(), wm.sum()) > 100
    for contrast in ("T1w", "T2w", "PDw"):
        data = sub.load(contrast).get_fdata()
        assert data[bone].mean() < 0.2 * data[wm].mean(), contrast
        if contrast == "T1w":
            assert data[fat].mean() > 1.3 * data[wm].mean()
    # The grid grew to hold the head.
    brain_only = Cohort.discover(demo_cohort).subjects[0].load("T1w")
    assert all(h > b for h, b in zip(t1.shape, brain_only.shape, strict=True))


def test_head_fat_and_skull_dark_on_the_epi_b0(head_cohort: Path):
    sub = Cohort.discover(head_cohort).subjects[0]
    b0 = sub.load("b0")
    frac = _head_fractions(b0)
    # Far behind the susceptibility hot spots the EPI displacement is below a voxel.
    posterior = (nib.affines.apply_affine(b0.affine, np.indices(b0.shape).reshape(3, -1).T)
                 [:, 1] < -40).reshape(b0.shape)
    data = b0.get_fdata()
    brain = (frac["gm"] + frac["wm"]) > 0.9
    fat = (frac["fat"] > 0.6) & posterior
    bone = (frac["bone"] > 0.8) & posterior
    assert fat.sum() > 30 and bone.sum() > 30
    # Medians: the EPI's coarse k-space coverage blurs the bright CSF shell into the skull's
    # edge voxels. Unsuppressed, fat would be about as bright as white matter.
    reference = np.median(data[brain])
    assert np.median(data[fat]) < 0.2 * reference
    assert np.median(data[bone]) < 0.25 * reference
    meta = json.loads((sub.path("b0").with_name(f"{sub.id}_dwi.json")).read_text())
    assert meta["PhaseEncodingDirection"] == "j"
    # 3 mm demo: EPI voxels 1.5 x IXI's over the same field of view, same echo spacing in mm.
    assert meta["TotalReadoutTime"] == pytest.approx(0.05 / 1.5)
    desc = json.loads((head_cohort / "dataset_description.json").read_text())
    params = desc["SimulationParameters"]
    assert params["head"]["skull_mm"] > 0 and params["epi"]["snr"] > 0
    assert 0 < desc["SubjectParameters"][sub.id]["epi"]["peak_displacement_mm"] < 15
    assert desc["Name"] == "mri2mri simulated demo cohort (head, EPI b=0)"


def test_default_cohort_has_no_head_or_epi(demo_cohort: Path):
    params = json.loads((demo_cohort / "dataset_description.json").read_text())
    assert params["Name"] == "mri2mri simulated demo cohort"
    assert "head" not in params["SimulationParameters"]
    assert "epi" not in params["SimulationParameters"]
    meta = json.loads((demo_cohort / "sub-001" / "dwi" / "sub-001_dwi.json").read_text())
    assert meta["TotalReadoutTime"] == 0.05 and "AcquisitionMatrixPE" not in meta


def test_head_cohort_is_valid_bids(head_cohort: Path):
    from bids_validation import bids_errors

    assert bids_errors(head_cohort) == []
