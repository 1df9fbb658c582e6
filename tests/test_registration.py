"""`register_images`, the transform files and `mri2mri-register` on the simulated cohort."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from onnx_fixtures import channel_picker

from mri2mri.benchmarks.registration.metrics import parameter_errors
from mri2mri.benchmarks.registration.motion import (
    apply_motion,
    foreground_centre,
    rigid_matrix,
    shift_header,
)
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.resample import resample_to
from mri2mri.runtime.registration import SETTINGS, Registration, check_overlap, register_images
from mri2mri.runtime.registration.cli import app
from mri2mri.runtime.registration.io import (
    itk_text,
    load_transform,
    parse_itk,
    save_matrix,
)

MOTION_ANGLES = (0.05, -0.04, 0.06)  # rad, about 3 degrees each
MOTION_SHIFT = (3.0, -2.5, 2.0)  # mm


@pytest.fixture(scope="module")
def pair(demo_cohort: Path) -> tuple[nib.Nifti1Image, nib.Nifti1Image, Cohort]:
    cohort = Cohort.discover(demo_cohort)
    subject = cohort.subjects[0]
    return subject.load("T1w"), subject.load("b0"), cohort


@pytest.fixture(scope="module")
def moved(pair) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """The b=0 after a known head motion, the motion, and the brain centre."""
    _, b0, _ = pair
    centre = foreground_centre(b0)
    motion = rigid_matrix(MOTION_ANGLES, MOTION_SHIFT, centre)
    return apply_motion(b0, motion), motion, centre


def _cli(args: list[str]) -> int:
    return exit_code(app, args)


def _assert_recovered(affine: np.ndarray, motion: np.ndarray, centre: np.ndarray) -> None:
    translation, angles = parameter_errors(affine, np.linalg.inv(motion), centre)
    assert np.abs(translation).max() < 1.0, translation
    assert np.abs(angles).max() < 0.01, angles


def test_direct_registration_recovers_known_motion(pair, moved) -> None:
    t1, _, _ = pair
    moved_b0, motion, centre = moved
    reg = register_images(t1, moved_b0)  # fast settings, rigid
    assert reg.transform == "rigid" and reg.settings == "fast"
    _assert_recovered(reg.affine, motion, centre)
    # The motion is large compared with the error: doing nothing would fail the check.
    with pytest.raises(AssertionError):
        _assert_recovered(np.eye(4), motion, centre)


def test_via_cli_recovers_known_motion_and_writes_outputs(pair, moved, tmp_path,
                                                          monkeypatch) -> None:
    """Plumbing of --via with a stand-in model (b0 copied and labelled T1w, no training)."""
    t1, b0, _ = pair
    moved_b0, motion, centre = moved
    reslices = []
    resample = Registration.resample

    def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202
        reslices.append(1)
        return resample(self, *args, **kwargs)

    monkeypatch.setattr(Registration, "resample", counted)
    model = channel_picker(tmp_path / "b0_to_T1w.onnx", ["b0"], "T1w", target_scale=1000.0)
    nib.save(t1, tmp_path / "sub-01_T1w.nii.gz")
    nib.save(moved_b0, tmp_path / "sub-01_b0.nii.gz")
    out = tmp_path / "moving2static.txt"
    assert _cli(["--moving", str(tmp_path / "sub-01_T1w.nii.gz"),
                 "--static", str(tmp_path / "sub-01_b0.nii.gz"), "--via", str(model),
                 "--out-affine", str(out), "--out-itk", str(tmp_path / "itk.txt"),
                 "--out-resliced", str(tmp_path / "resliced.nii.gz"),
                 "--out-synthesized", str(tmp_path / "synth.nii.gz"),
                 "--report", str(tmp_path / "report.html")]) == 0
    assert len(reslices) == 1  # one resliced image serves --out-resliced and --report
    page = (tmp_path / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 7  # 2 edges, 2 flickers x 2, synth
    assert 'class="flicker"' in page and "edges of the static image" in page
    assert "not checked (the model has no training-data summary)" in page
    assert "http://" not in page and "https://" not in page
    affine = load_transform(out)
    _assert_recovered(affine, motion, centre)
    np.testing.assert_allclose(load_transform(tmp_path / "itk.txt"), affine, atol=1e-6)
    resliced = nib.load(tmp_path / "resliced.nii.gz")
    assert resliced.shape == moved_b0.shape
    np.testing.assert_allclose(resliced.affine, moved_b0.affine, atol=1e-5)
    synth = nib.load(tmp_path / "synth.nii.gz")  # the intermediary keeps the static geometry
    np.testing.assert_allclose(synth.affine, moved_b0.affine, atol=1e-5)
    # A second run refuses to overwrite and leaves the first outputs alone.
    before = out.read_text()
    assert _cli(["--moving", str(tmp_path / "sub-01_T1w.nii.gz"),
                 "--static", str(tmp_path / "sub-01_b0.nii.gz"), "--out-affine", str(out)]) == 1
    assert out.read_text() == before


def test_study_settings_are_the_studys() -> None:
    study = SETTINGS["study"]
    assert (study.nbins, study.sampling_proportion) == (32, None)
    assert study.level_iters == (10000, 1000, 100)
    assert study.sigmas == (5.0, 2.5, 0.0) and study.factors == (4, 2, 1)
    assert study.working_voxel_mm is None and study.translation_stage
    assert not study.centre_frame and study.crop_margin_mm is None


def test_resample_matches_world_resampling(pair) -> None:
    """A known transform resamples like nibabel would after moving the header by its inverse."""
    t1, b0, _ = pair
    affine = rigid_matrix((0.0, 0.0, 0.1), (4.0, 0.0, 0.0), foreground_centre(b0))
    reg = Registration(affine, "rigid", "fast", 0.0, b0.shape, b0.affine, b0.header)
    ours = reg.resample(t1).get_fdata()
    # Reading T1 at A(x) is reading a T1 whose header was moved by A^-1 at x.
    expected = resample_to(shift_header(t1, np.linalg.inv(affine)), b0).get_fdata()
    inside = expected > 0.05 * expected.max()
    assert np.abs(ours - expected)[inside].max() < 1e-3 * expected.max()


def test_itk_text_round_trip_and_convention() -> None:
    affine = rigid_matrix((0.1, -0.2, 0.05), (1.0, 2.0, 3.0), (10.0, -5.0, 20.0))
    np.testing.assert_allclose(parse_itk(itk_text(affine)), affine, atol=1e-9)
    # A pure RAS translation (1, 2, 3) is (-1, -2, 3) in ITK's LPS world.
    text = itk_text(rigid_matrix((0, 0, 0), (1.0, 2.0, 3.0)))
    params = [float(v) for v in text.split("Parameters: ")[1].split("\n")[0].split()]
    assert params == [1, 0, 0, 0, 1, 0, 0, 0, 1, -1.0, -2.0, 3.0]
    # ITK's centre of rotation: x -> M (x - c) + c + t.
    rot90 = "0 -1 0 1 0 0 0 0 1 0 0 0"
    centred = ("#Insight Transform File V1.0\n#Transform 0\n"
               "Transform: AffineTransform_double_3_3\n"
               f"Parameters: {rot90}\nFixedParameters: 10 0 0\n")
    m = parse_itk(centred)
    # LPS (10, 0, 0) is the fixed point, i.e. RAS (-10, 0, 0).
    np.testing.assert_allclose(m @ [-10.0, 0, 0, 1], [-10.0, 0, 0, 1], atol=1e-12)


def test_resampled_image_takes_the_grids_header(pair) -> None:
    """Resliced onto the static grid: the static's affine, codes and units, not the moving's."""
    t1, b0, _ = pair
    static = image_like(b0, np.asarray(b0.dataobj), "static")
    static.set_qform(b0.affine, code=1)
    static.set_sform(b0.affine, code=2)  # aligned space: must not turn into "scanner"
    static.header.set_xyzt_units("mm", "sec")
    t1 = image_like(t1, np.asarray(t1.dataobj), "moving")
    t1.header.set_xyzt_units("micron")
    reg = Registration(np.eye(4), "rigid", "fast", 0.0, static.shape, static.affine,
                       static.header)
    for out, grid in ((reg.resample(t1), static), (reg.resample(static, reference=t1), t1)):
        assert out.shape == grid.shape and out.get_data_dtype() == np.float32
        np.testing.assert_allclose(out.affine, grid.affine)
        for field in ("qform_code", "sform_code", "xyzt_units"):
            assert out.header[field] == grid.header[field], field
    assert reg.resample(t1).header["descrip"] == b"moving"


def test_matrix_file_round_trip(tmp_path) -> None:
    affine = rigid_matrix((0.01, 0.02, 0.03), (1.0, -1.0, 0.5))
    save_matrix(affine, tmp_path / "m.txt")
    np.testing.assert_allclose(load_transform(tmp_path / "m.txt"), affine, atol=1e-9)
    (tmp_path / "bad.txt").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(InputError, match="4 rows of 4"):
        load_transform(tmp_path / "bad.txt")


def test_non_overlapping_images_are_refused(pair, tmp_path, capsys) -> None:
    t1, b0, _ = pair
    far = shift_header(t1, rigid_matrix((0, 0, 0), (0.0, 0.0, 600.0)))
    with pytest.raises(InputError, match="does not overlap"):
        check_overlap(far, b0)
    nib.save(far, tmp_path / "far_T1w.nii.gz")
    nib.save(b0, tmp_path / "b0.nii.gz")
    code = _cli(["--moving", str(tmp_path / "far_T1w.nii.gz"),
                 "--static", str(tmp_path / "b0.nii.gz"), "--out-affine", str(tmp_path / "a.txt")])
    err = capsys.readouterr().err
    assert code == 1 and "far_T1w.nii.gz" in err and "does not overlap" in err
    assert not (tmp_path / "a.txt").exists()


def test_wrong_model_and_unknown_contrast_are_refused(pair, tmp_path, capsys) -> None:
    t1, b0, _ = pair
    nib.save(t1, tmp_path / "sub-01_T1w.nii.gz")
    nib.save(t1, tmp_path / "anatomy.nii.gz")
    nib.save(b0, tmp_path / "b0.nii.gz")
    to_t2 = channel_picker(tmp_path / "b0_to_T2w.onnx", ["b0"], "T2w")
    to_t1 = channel_picker(tmp_path / "b0_to_T1w.onnx", ["b0"], "T1w")
    cases = [
        (["--moving", str(tmp_path / "sub-01_T1w.nii.gz"), "--via", str(to_t2)],
         "synthesizes T2w, but the moving image is T1w"),
        (["--moving", str(tmp_path / "anatomy.nii.gz"), "--via", str(to_t1)],
         "pass --moving-contrast"),
        (["--moving", str(tmp_path / "anatomy.nii.gz"), "--via", str(to_t1),
          "--moving-contrast", "T2w"], "synthesizes T1w, but the moving image is T2w"),
        (["--moving", str(tmp_path / "sub-01_T1w.nii.gz"), "--via", str(to_t1),
          "--static-contrast", "T1w"], "expects a b0 input, but the static image is T1w"),
    ]
    for extra, message in cases:
        code = _cli([*extra, "--static", str(tmp_path / "b0.nii.gz"),
                     "--out-affine", str(tmp_path / "a.txt")])
        assert code == 1
        assert message in capsys.readouterr().err
    assert not (tmp_path / "a.txt").exists()


def test_dwi_static_needs_bvals_and_uses_b0(demo_cohort: Path, tmp_path, capsys) -> None:
    subject = Cohort.discover(demo_cohort).subjects[1]
    dwi = subject.path("b0")
    args = ["--moving", str(subject.path("T1w")), "--static", str(dwi),
            "--out-affine", str(tmp_path / "a.txt")]
    assert _cli(args) == 1
    assert "without b-values" in capsys.readouterr().err
    assert _cli([*args, "--bval", str(subject.bvals)]) == 0
    translation, angles = parameter_errors(load_transform(tmp_path / "a.txt"), np.eye(4),
                                           foreground_centre(subject.load("b0")))
    assert np.abs(translation).max() < 1.0 and np.abs(angles).max() < 0.01
