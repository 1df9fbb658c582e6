"""`mri2mri-bench zero-shot` with a b=0 on either side: the b=0 is the mean b=0 of the
subject's DWI (on its own oblique grid), and both directions are scored voxel by voxel on
the T1w's grid, the b=0 (and a synthesis made from it) resampled by world coordinates."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from test_zero_shot import negator

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.generalisation import zero_shot

#: The T1w's grid (3 mm) and the DWI's: 3.5 x 3.5 x 4 mm, tilted 7 degrees about x,
#: covering the T1w's field of view with a margin.
T1W_SHAPE, DWI_SHAPE = (30, 34, 14), (40, 40, 20)
C = 3000.0


def _object(points: np.ndarray, k: int) -> np.ndarray:
    """A smooth 'tissue' at world points (N, 3), its own per subject."""
    x, y, z = points.T
    return (1000.0 + 300.0 * np.sin(x / (15.0 + k)) + 200.0 * np.cos(y / 11.0)
            + 150.0 * np.sin(z / 9.0 + x / 20.0))


def _sample(shape: tuple[int, ...], affine: np.ndarray, k: int) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    return _object(nib.affines.apply_affine(affine, ijk.reshape(-1, 3)), k).reshape(shape)


def _dwi_affine(rng: np.random.Generator) -> np.ndarray:
    tilt = np.deg2rad(7.0)
    rot = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([3.5, 3.5, 4.0])
    centre = np.array(T1W_SHAPE) * 1.5 + rng.uniform(-3, 3, 3)
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(DWI_SHAPE) - 1) / 2)
    return affine


@pytest.fixture(scope="module")
def with_dwi(tmp_path_factory):
    """Three subjects: a T1w (the object), and a DWI whose b=0 volumes are C minus the
    object (level-free, minus the T1w *is* the b=0), sampled on the DWI's own grid; its
    b=1000 volume is something else, which the mean b=0 must leave out."""
    root = tmp_path_factory.mktemp("zero-shot-b0") / "real"
    rng = np.random.default_rng(0)
    for k in range(3):
        sub = f"sub-{k + 1:02d}"
        (root / sub / "anat").mkdir(parents=True)
        (root / sub / "dwi").mkdir()
        t1_affine = np.diag([3.0, 3.0, 3.0, 1.0])
        t1 = _sample(T1W_SHAPE, t1_affine, k) * rng.uniform(0.5, 2.0)
        nib.save(nib.Nifti1Image(t1.astype(np.float32), t1_affine),
                 root / sub / "anat" / f"{sub}_T1w.nii.gz")
        affine = _dwi_affine(rng)
        b0 = C - _sample(DWI_SHAPE, affine, k)
        series = np.stack([b0, b0, rng.uniform(1, 5000, DWI_SHAPE)], axis=3)
        nib.save(nib.Nifti1Image(series.astype(np.float32), affine),
                 root / sub / "dwi" / f"{sub}_dwi.nii.gz")
        (root / sub / "dwi" / f"{sub}_dwi.bval").write_text("0 0 1000\n")
        (root / sub / "dwi" / f"{sub}_dwi.bvec").write_text("0 0 1\n0 0 0\n0 0 0\n")
    return root


@pytest.mark.parametrize("source,target", [("T1w", "b0"), ("b0", "T1w")])
def test_b0_is_read_from_the_dwi_and_scored_on_the_t1w_grid(with_dwi, tmp_path, source,
                                                            target):
    model = negator(tmp_path / "model.onnx", source, target)
    out = tmp_path / "out"
    assert exit_code(app, ["zero-shot", "--model", str(model), "--real", str(with_dwi),
                           "--out", str(out), "--source", source, "--target", target,
                           "--threads", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["source"], summary["target"]) == (source, target)
    voxel_ml = 27.0 / 1000.0
    for sid, entry in summary["subjects"].items():
        # The whole T1w grid is scored (the DWI covers it), whichever side the b=0 is on.
        assert entry["region_ml"]["brain"] == pytest.approx(np.prod(T1W_SHAPE) * voxel_ml)
        assert entry["lesion_ml"] is None  # no T1w/T2w pair: no lesion looked for
        # The model is exact up to gain and offset, on the b=0's grid or the T1w's: only
        # the resampling (by world coordinates) of a smooth object separates it from the
        # reference. Resampled by voxel index instead, it would not be near.
        found = entry["scores"]
        assert found["model"]["brain"]["level_free_psnr"] > 45, sid  # 4 mm off: 28
        assert found["model"]["brain"]["level_free_ssim"] > 0.99, sid
        assert found["lut_own"]["brain"]["level_free_psnr"] > 25, sid


def test_the_pair_resamples_the_b0_onto_the_t1w_grid(with_dwi):
    from mri2mri.data.cohort import Cohort

    subject = Cohort.discover(with_dwi).subjects[0]
    t1 = nib.load(with_dwi / subject.id / "anat" / f"{subject.id}_T1w.nii.gz")
    for source, target in (("T1w", "b0"), ("b0", "T1w")):
        pair = zero_shot.Pair(subject, source, target)
        assert pair.source.shape == pair.reference.shape == T1W_SHAPE
        assert np.allclose(pair.grid.affine, t1.affine) and pair.voxel_mm == (3.0, 3.0, 3.0)
        assert pair.image.shape == (T1W_SHAPE if source == "T1w" else DWI_SHAPE)
    # The mean b=0 leaves the b=1000 volume out: C minus the T1w's object, up to its gain.
    b0 = zero_shot.Pair(subject, "T1w", "b0").reference
    t1w = np.asarray(t1.dataobj, dtype=np.float64)
    assert np.corrcoef(b0.ravel(), t1w.ravel())[0, 1] < -0.999
