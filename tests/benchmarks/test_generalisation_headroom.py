"""`mri2mri-bench headroom`: what any model could gain over the LUT, leaving one subject out."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.generalisation.headroom import METHODS


def _ring_cohort(root, subjects: int = 3):
    """Heads whose T1w is flat inside the brain while the T2w is bright in a rim near its
    edge: the intensity says nothing about the T2w there, the position everything."""
    rng = np.random.default_rng(0)
    shape = (40, 40, 12)
    grid = np.indices(shape).astype(float)
    radius = np.sqrt((grid[0] - 19.5) ** 2 + (grid[1] - 19.5) ** 2)
    brain = radius < 16
    for i in range(subjects):
        anat = root / f"sub-{i + 1:02d}" / "anat"
        anat.mkdir(parents=True)
        gain = rng.uniform(500, 1500)
        t1 = np.where(brain, 1.0 + rng.normal(0, 0.03, shape), 0.0) * gain
        t2 = np.where(brain, np.where(radius > 11, 2.0, 0.5), 0.0) * gain
        t2 += np.where(brain, rng.normal(0, 0.03, shape) * gain, 0.0)
        for name, image in (("T1w", t1), ("T2w", t2)):
            nib.save(nib.Nifti1Image(image.astype(np.float32), np.diag([2.0, 2.0, 2.0, 1])),
                     anat / f"sub-{i + 1:02d}_{name}.nii.gz")
    return root


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    root = tmp_path_factory.mktemp("headroom")
    data = _ring_cohort(root / "data")
    out = root / "out"
    assert exit_code(app, ["headroom", "--data", str(data), "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_every_subject_is_scored_by_every_method(measured):
    out, summary = measured
    assert set(summary["subjects"]) == {"sub-01", "sub-02", "sub-03"}
    for entry in summary["subjects"].values():
        assert set(entry["scores"]) == set(METHODS)
        for regions in entry["scores"].values():
            assert np.isfinite(regions["brain"]["psnr"]) and 0 < regions["brain"]["ssim"] <= 1
    table = (out / "table.md").read_text()
    assert all(sid in table for sid in summary["subjects"]) and "trees, with context" in table


def test_context_finds_what_intensity_cannot(measured):
    """The rim is invisible to a per-intensity map, even the subject's own; the context
    features (depth in the brain, smoothing across the edge) find it."""
    _, summary = measured
    for entry in summary["subjects"].values():
        psnr = {m: entry["scores"][m]["brain"]["psnr"] for m in METHODS}
        assert psnr["trees_context"] > psnr["lut_own"] + 6
        assert psnr["trees_context"] > psnr["trees_intensity"] + 6
        assert abs(psnr["trees_intensity"] - psnr["lut"]) < 2


@pytest.mark.parametrize("extra, says", [
    (["--normalisation", "zscore"], "--normalisation 'zscore'"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, extra, says):
    data = _ring_cohort(tmp_path / "data")
    out = tmp_path / "out"
    assert exit_code(app, ["headroom", "--data", str(data), "--out", str(out), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert not out.exists()


def test_needs_three_subjects(tmp_path, capsys):
    data = _ring_cohort(tmp_path / "data", subjects=2)
    assert exit_code(app, ["headroom", "--data", str(data), "--out", str(tmp_path / "o")]) == 1
    assert "at least 3 subjects" in capsys.readouterr().err
