"""Masks in registration: checks, files, DIPY's metric in every stage, the automatic via mask."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from dipy.align.transforms import RigidTransform3D
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
)

from mri2mri.benchmarks.registration.metrics import parameter_errors
from mri2mri.benchmarks.registration.motion import apply_motion, foreground_centre, rigid_matrix
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.registration import align, register_images
from mri2mri.runtime.registration.cli import app
from mri2mri.runtime.registration.grids import Grid
from mri2mri.runtime.registration.io import load_transform
from mri2mri.runtime.registration.masks import brain_mask, check_mask, load_mask
from mri2mri.runtime.registration.via import register_files


@pytest.fixture(scope="module")
def pair(demo_cohort: Path) -> tuple[nib.Nifti1Image, nib.Nifti1Image, np.ndarray, np.ndarray]:
    """T1w, the b=0 after a known head motion, the motion and the brain centre."""
    subject = Cohort.discover(demo_cohort).subjects[3]
    t1, b0 = subject.load("T1w"), subject.load("b0")
    centre = foreground_centre(b0)
    motion = rigid_matrix((0.04, 0.05, -0.03), (-2.0, 3.0, 1.5), centre)
    return t1, apply_motion(b0, motion), motion, centre


def _recovered(affine: np.ndarray, motion: np.ndarray, centre: np.ndarray) -> bool:
    translation, angles = parameter_errors(affine, np.linalg.inv(motion), centre)
    return bool(np.abs(translation).max() < 1.0 and np.abs(angles).max() < 0.01)


def _mask_image(mask: np.ndarray, like: nib.Nifti1Image) -> nib.Nifti1Image:
    return image_like(like, mask.astype(np.uint8), dtype=np.uint8)


def test_masks_are_checked_against_their_image(pair, tmp_path) -> None:
    t1, b0, _, _ = pair
    good = foreground_mask(b0.get_fdata())
    assert check_mask(good.astype(np.uint8), b0, "m").dtype == bool
    with pytest.raises(InputError, match="m: mask of shape .* is not on its image's grid"):
        check_mask(good[:-1], b0, "m")
    with pytest.raises(InputError, match="m: mask is empty"):
        check_mask(np.zeros(b0.shape), b0, "m")
    nib.save(_mask_image(good, b0), tmp_path / "ok.nii.gz")
    assert load_mask(tmp_path / "ok.nii.gz", b0).sum() == good.sum()
    shifted = _mask_image(good, b0)
    shifted.set_sform(rigid_matrix((0, 0, 0), (5.0, 0, 0)) @ b0.affine)
    nib.save(shifted, tmp_path / "shifted.nii.gz")
    with pytest.raises(InputError, match="shifted.nii.gz: mask is not on its image's grid"):
        load_mask(tmp_path / "shifted.nii.gz", b0)
    (tmp_path / "junk.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(InputError, match="junk.nii.gz: not a readable NIfTI mask"):
        load_mask(tmp_path / "junk.nii.gz", b0)
    # The Python API refuses a mask that belongs to the other image.
    with pytest.raises(InputError, match="static mask: mask of shape"):
        register_images(t1, b0, static_mask=foreground_mask(t1.get_fdata()))


def test_every_stage_gets_the_masks_and_sampling_honours_them(pair, monkeypatch) -> None:
    """DIPY sees a static mask in the coarse stage and in the sampled refinement, which keeps
    only points inside it (DIPY itself would drop masks there); the motion is recovered."""
    t1, b0, motion, centre = pair
    sampled: list[int] = []
    regions: list[int] = []
    setup = align.SampledMutualInformation.setup

    def spy(self, transform, static, moving, **kwargs):  # noqa: ANN001, ANN202
        setup(self, transform, static, moving, **kwargs)
        if self.samples is not None:  # the refinement, which drives the metric itself
            regions.append(int(kwargs["static_mask"].sum()))
            assert align._inside(kwargs["static_mask"], self.static_world2grid,
                                 self.samples).all()
            sampled.append(self.ns)

    monkeypatch.setattr(align.SampledMutualInformation, "setup", spy)
    optimize = align.AffineRegistration.optimize

    def spy_optimize(self, *args, **kwargs):  # noqa: ANN001, ANN202
        assert kwargs.get("moving_mask") is None  # handed over as a static region
        regions.append(int(kwargs["static_mask"].sum()))
        return optimize(self, *args, **kwargs)

    monkeypatch.setattr(align.AffineRegistration, "optimize", spy_optimize)
    reg = register_images(t1, b0, moving_mask=foreground_mask(t1.get_fdata()),
                          static_mask=brain_mask(b0, dilate_mm=0.0))
    assert len(regions) == 2 and min(regions) > 0  # the rigid stage and the refinement
    assert len(sampled) == 1 and sampled[0] > 0
    assert _recovered(reg.affine, motion, centre)


def test_a_moving_mask_becomes_the_static_voxels_mapped_into_it() -> None:
    """On known grids: the moving mask's half-space, seen through a 2-voxel shift."""
    ones = np.ones((10, 10, 10))
    moving_mask = np.zeros((10, 10, 10), bool)
    moving_mask[:5] = True
    static = Grid(ones, np.eye(4))
    moving = Grid(ones, np.eye(4), moving_mask)
    shift = rigid_matrix((0, 0, 0), (2.0, 0, 0))  # static x -> moving x + 2
    region = align._static_region(static, moving, shift)
    assert region[:3].all() and not region[3:].any()
    half = np.zeros((10, 10, 10), bool)
    half[:, :5] = True  # with a static mask too: the intersection
    both = align._static_region(Grid(ones, np.eye(4), half), moving, shift)
    assert both.sum() == 3 * 5 * 10 and not both[:, 5:].any()
    assert align._static_region(static, Grid(ones, np.eye(4)), shift) is None


def test_sampled_metric_drops_samples_outside_the_masks() -> None:
    """On a known grid: a half-volume static mask keeps about half of DIPY's samples."""
    rng = np.random.default_rng(0)
    static, moving = rng.random((20, 20, 20)), rng.random((20, 20, 20))
    metric = align.SampledMutualInformation(nbins=16, sampling_proportion=0.5)
    np.random.seed(0)
    metric.setup(RigidTransform3D(), static, moving)
    total = metric.ns
    half = np.zeros(static.shape, bool)
    half[:10] = True
    np.random.seed(0)
    metric.setup(RigidTransform3D(), static, moving, static_mask=half)
    assert 0.4 * total < metric.ns < 0.6 * total
    assert np.all(metric.samples[:, 0] < 9.5)  # world = grid here: x below the mask's edge
    # The moving mask is tested through the starting transform: a shift by 5 voxels moves
    # the moving mask's edge, so fewer static points land inside it.
    shift = rigid_matrix((0, 0, 0), (5.0, 0, 0))
    np.random.seed(0)
    metric.setup(RigidTransform3D(), static, moving, moving_mask=half, starting_affine=shift)
    assert np.all(metric.samples[:, 0] + 5 < 9.5) and metric.ns < 0.4 * total
    assert len(metric.static_vals) == len(metric.samples_prealigned) == metric.ns


def test_brain_mask_covers_the_brain_only(pair) -> None:
    _, b0, _, _ = pair
    mask = brain_mask(b0)
    brain = foreground_mask(b0.get_fdata())  # the demo cohort has no skull: brain = foreground
    assert mask.shape == b0.shape and mask.dtype == bool
    assert (mask & brain).sum() > 0.99 * brain.sum()
    assert mask.sum() < 1.5 * brain.sum()  # a few mm of margin, not the whole field of view
    assert mask.sum() < 0.8 * mask.size


def test_cli_with_mask_files_and_bad_masks(pair, tmp_path, capsys) -> None:
    t1, b0, motion, centre = pair
    nib.save(t1, tmp_path / "sub-1_T1w.nii.gz")
    nib.save(b0, tmp_path / "sub-1_b0.nii.gz")
    nib.save(_mask_image(foreground_mask(t1.get_fdata()), t1), tmp_path / "t1_mask.nii.gz")
    nib.save(_mask_image(brain_mask(b0), b0), tmp_path / "b0_mask.nii.gz")
    base = ["--moving", str(tmp_path / "sub-1_T1w.nii.gz"),
            "--static", str(tmp_path / "sub-1_b0.nii.gz")]
    out = tmp_path / "a.txt"
    # The T1w's mask given as the static mask: wrong grid, one line naming the file, no output.
    assert exit_code(app, [*base, "--out-affine", str(out),
                           "--static-mask", str(tmp_path / "t1_mask.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "t1_mask.nii.gz: mask of shape" in err and len(err.strip().splitlines()) == 1
    nib.save(_mask_image(np.zeros(b0.shape, bool), b0), tmp_path / "empty.nii.gz")
    assert exit_code(app, [*base, "--out-affine", str(out),
                           "--static-mask", str(tmp_path / "empty.nii.gz")]) == 1
    assert "empty.nii.gz: mask is empty" in capsys.readouterr().err
    assert not out.exists()
    assert exit_code(app, [*base, "--out-affine", str(out),
                           "--moving-mask", str(tmp_path / "t1_mask.nii.gz"),
                           "--static-mask", str(tmp_path / "b0_mask.nii.gz")]) == 0
    assert "masks: moving: t1_mask.nii.gz, static: b0_mask.nii.gz" in capsys.readouterr().out
    assert _recovered(load_transform(out), motion, centre)


def test_via_masks_the_synthesized_image_automatically(pair, tmp_path) -> None:
    t1, b0, motion, centre = pair
    model = channel_picker(tmp_path / "b0_to_T1w.onnx", ["b0"], "T1w", target_scale=1000.0)
    nib.save(t1, tmp_path / "sub-1_T1w.nii.gz")
    nib.save(b0, tmp_path / "sub-1_b0.nii.gz")
    common = {"via": model, "device": "cpu", "threads": 1}
    auto = register_files(tmp_path / "sub-1_T1w.nii.gz", tmp_path / "sub-1_b0.nii.gz",
                          out_affine=tmp_path / "auto.txt", via_mask="auto", **common)
    plain = register_files(tmp_path / "sub-1_T1w.nii.gz", tmp_path / "sub-1_b0.nii.gz",
                           out_affine=tmp_path / "none.txt", via_mask="none", **common)
    assert auto.masks == "static: auto" and plain.masks == "none"
    assert _recovered(auto.registration.affine, motion, centre)
    assert not np.allclose(auto.registration.affine, plain.registration.affine, atol=1e-6)
    with pytest.raises(InputError, match="--via-mask: choose from auto, none"):
        register_files(tmp_path / "sub-1_T1w.nii.gz", tmp_path / "sub-1_b0.nii.gz",
                       out_affine=tmp_path / "x.txt", via_mask="brain", **common)


def test_a_moving_image_finer_than_the_static_is_refined_at_the_statics_voxel(pair,
                                                                             monkeypatch) -> None:
    """A T1w at half its voxel size: the refinement reads it at the b=0's finest voxel
    (what the b=0's samples can see), and the motion is recovered as from the original."""
    from nibabel.processing import resample_to_output

    t1, b0, motion, centre = pair
    fine = resample_to_output(t1, voxel_sizes=np.asarray(t1.header.get_zooms()[:3]) / 2,
                              order=1)
    refined_zooms: list[np.ndarray] = []
    setup = align.SampledMutualInformation.setup

    def spy(self, transform, static, moving, **kwargs):  # noqa: ANN001, ANN202
        if self.sampling_proportion is not None:
            refined_zooms.append(nib.affines.voxel_sizes(kwargs["moving_grid2world"]))
        return setup(self, transform, static, moving, **kwargs)

    monkeypatch.setattr(align.SampledMutualInformation, "setup", spy)
    reg = register_images(fine, b0)
    static_voxel = min(b0.header.get_zooms()[:3])
    assert len(refined_zooms) == 1
    np.testing.assert_allclose(refined_zooms[0], static_voxel, rtol=1e-6)
    assert _recovered(reg.affine, motion, centre)
    coarse = register_images(t1, b0)  # the original grid, not finer: read as it is
    translation, angles = parameter_errors(reg.affine, coarse.affine, centre)
    assert np.abs(translation).max() < 0.25 and np.abs(angles).max() < 0.005
