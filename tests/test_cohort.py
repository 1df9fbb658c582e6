"""Cohort index and subject-level splits."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.data.cohort import Cohort, check_splits, make_splits, split_rule, split_sizes
from mri2mri.runtime.core.errors import InputError


def _touch_image(path: Path, shape=(4, 4, 4)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.ones(shape, np.float32), np.eye(4)), str(path))


def _bids(root: Path) -> Path:
    _touch_image(root / "sub-01/anat/sub-01_T1w.nii.gz")
    _touch_image(root / "sub-01/anat/sub-01_T2w.nii.gz")
    _touch_image(root / "sub-02/anat/sub-02_T1w.nii.gz")
    _touch_image(root / "sub-02/dwi/sub-02_dwi.nii.gz", (4, 4, 4, 3))
    (root / "sub-02/dwi/sub-02_dwi.bval").write_text("0 1000 0\n")
    _touch_image(root / "sub-03/dwi/sub-03_dwi.nii.gz", (4, 4, 4, 2))  # no .bval: no b0
    _touch_image(root / "sub-04/anat/sub-04_acq-fast_PDw.nii.gz")
    _touch_image(root / "derivatives/x/sub-05/anat/sub-05_T1w.nii.gz")
    _touch_image(root / "sub-01/anat/sub-01_FLAIR.nii.gz")  # not a contrast we use
    return root


def test_discovery_finds_contrasts(tmp_path):
    cohort = Cohort.discover(_bids(tmp_path))
    assert cohort.ids == ["sub-01", "sub-02", "sub-04"]
    assert cohort.subject("sub-01").contrasts == ["T1w", "T2w"]
    assert cohort.subject("sub-02").contrasts == ["T1w", "b0"]
    assert cohort.subject("sub-04").contrasts == ["PDw"]
    assert [s.id for s in cohort.with_contrasts("T1", "b0")] == ["sub-02"]


def test_b0_is_mean_of_b0_volumes(tmp_path):
    root = tmp_path / "ds"
    ramp = np.arange(64, dtype=np.float32).reshape(4, 4, 4) + 1
    data = np.stack([ramp * v for v in (10, 3, 30)], axis=3)
    (root / "sub-01/dwi").mkdir(parents=True)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(root / "sub-01/dwi/sub-01_dwi.nii.gz"))
    (root / "sub-01/dwi/sub-01_dwi.bval").write_text("0 1000 5\n")
    b0 = Cohort.discover(root).subjects[0].load("b0")
    assert b0.shape == (4, 4, 4)
    np.testing.assert_allclose(b0.get_fdata(), ramp * 20.0)


def test_b_values_belong_to_the_dwi_kept(tmp_path):
    """Of several DWI runs the first is kept, with its own .bval (not the last run's)."""
    dwi = tmp_path / "sub-01/dwi"
    for run, bvals in ((1, "0 1000 0\n"), (2, "1000 0 1000\n")):
        _touch_image(dwi / f"sub-01_run-{run}_dwi.nii", (4, 4, 4, 3))
        (dwi / f"sub-01_run-{run}_dwi.bval").write_text(bvals)
    subject = Cohort.discover(tmp_path).subject("sub-01")
    assert subject.path("b0") == dwi / "sub-01_run-1_dwi.nii"
    assert subject.bvals == dwi / "sub-01_run-1_dwi.bval"


def test_missing_contrast_is_a_clear_error(tmp_path):
    subject = Cohort.discover(_bids(tmp_path)).subject("sub-04")
    with pytest.raises(InputError, match="sub-04 has no T1w image"):
        subject.load("T1w")


def test_empty_directory_is_an_error(tmp_path):
    with pytest.raises(InputError, match="no BIDS subjects"):
        Cohort.discover(tmp_path)
    with pytest.raises(InputError, match="not found"):
        Cohort.discover(tmp_path / "nope")


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 12, 40, 417])
def test_splits_are_disjoint_complete_and_deterministic(n):
    ids = [f"sub-{i:03d}" for i in range(n)]
    a = make_splits(ids, seed=7)
    assert a == make_splits(list(reversed(ids)), seed=7)  # order of discovery does not matter
    assert sorted(sum(a.values(), [])) == ids
    check_splits(a)
    n_train, n_val, n_test = split_sizes(n)
    assert (len(a["train"]), len(a["validation"]), len(a["test"])) == (n_train, n_val, n_test)
    if n >= 3:
        assert n_val >= 1 and n_train >= 1
    if n >= 5:
        assert n_test >= 1


@pytest.mark.parametrize("n", [3, 4])
def test_small_cohorts_train_on_all_but_the_validation_subject(n: int) -> None:
    assert split_sizes(n) == (n - 1, 1, 0)
    assert "all but one train" in split_rule(n)
    assert split_sizes(5)[2] == 1 and "proportional" in split_rule(5)


def test_different_seeds_give_different_splits():
    ids = [f"sub-{i:03d}" for i in range(40)]
    assert make_splits(ids, seed=0) != make_splits(ids, seed=1)


def test_explicit_sizes_like_the_study():
    ids = [f"sub-{i:03d}" for i in range(417)]
    s = make_splits(ids, sizes=(338, 0, 79))
    assert (len(s["train"]), len(s["validation"]), len(s["test"])) == (338, 0, 79)


def test_split_file_is_used_and_checked(tmp_path):
    root = _bids(tmp_path)
    (root / "splits.json").write_text(json.dumps(
        {"train": ["sub-01", "sub-04"], "validation": [], "test": ["sub-02"]}))
    cohort = Cohort.discover(root)
    assert [s.id for s in cohort.split("test")] == ["sub-02"]
    assert [s.id for s in cohort.split("train")] == ["sub-01", "sub-04"]
    (root / "splits.json").write_text(json.dumps({"train": ["sub-01"], "test": ["sub-01"]}))
    with pytest.raises(ValueError, match="sub-01 is in both"):
        Cohort.discover(root).splits()
