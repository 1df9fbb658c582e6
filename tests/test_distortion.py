"""`mri2mri-register --correct-distortion` on a phantom with a known displacement.

One correction through the command (module fixture) is checked for everything it writes:
the corrected series on the input's grid, affine and volume order, its b-values and
rotated b-vectors, the field map as a valid BIDS derivative, the displacement against the
truth, the provenance sidecar, and the QC page in a headless Chromium.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_validation import bids_errors
from browser import headless_page
from distortion_phantom import SHAPE, TOTAL_READOUT_TIME, ZOOMS, distorted, grid_affine, write_case
from onnx_fixtures import channel_picker, collect_sessions  # noqa: F401 - autouse: frees sessions

from mri2mri.runtime.registration import cli
from mri2mri.runtime.registration.distortion_apply import sample_positions, unwarp_series
from mri2mri.runtime.registration.distortion_field import Displacement, estimate_displacement
from mri2mri.runtime.registration.io import load_transform

PEAK = 2.0  # voxels along j (5 mm)
SERIES = "sub-01/dwi/sub-01_space-T1w_desc-sdc_dwi"
FMAP = "sub-01/fmap/sub-01_desc-sdc"


def _command(paths: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return ["mri2mri-register", "--correct-distortion", "--dwi", str(paths["dwi"]),
            "--t1w", str(paths["t1w"]), "--out", str(out), "--model", str(paths["model"]),
            "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def corrected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sdc")
    paths = write_case(root / "raw", peak=PEAK)
    out = root / "derivatives"
    argv = sys.argv
    sys.argv = _command(paths, out)
    said = io.StringIO()
    try:
        with pytest.raises(SystemExit) as done, contextlib.redirect_stderr(said):
            cli.main()
    finally:
        sys.argv = argv
    assert done.value.code in (0, None)
    (root / "stderr.txt").write_text(said.getvalue())
    return {**paths, "out": out, "stderr": root / "stderr.txt"}


def test_the_series_keeps_its_grid_affine_and_volume_order(corrected: dict[str, Path]) -> None:
    src = nib.load(corrected["dwi"])
    out = nib.load(corrected["out"] / f"{SERIES}.nii.gz")
    assert out.shape == src.shape and np.allclose(out.affine, src.affine)
    assert int(out.header["qform_code"]) == int(src.header["qform_code"])
    data = np.asarray(out.dataobj)
    inside = data[..., 0] > 0.3 * data[..., 0].max()
    for n, factor in ((1, 1.02), (2, 0.5), (3, 0.4)):  # one resampling, each volume alike
        np.testing.assert_allclose(data[..., n][inside], factor * data[..., 0][inside],
                                   rtol=1e-4, atol=1e-3)
    text = (corrected["out"] / f"{SERIES}.bval").read_text().split()
    assert text == ["0", "5", "1000", "1000"]
    bvecs = np.loadtxt(corrected["out"] / f"{SERIES}.bvec")
    source = np.loadtxt(corrected["dwi"].with_name("sub-01_dwi.bvec"))
    np.testing.assert_allclose(bvecs, source, atol=0.03)  # the rigid map is nearly the identity
    np.testing.assert_allclose(np.linalg.norm(bvecs[:, 2:], axis=0), 1.0, atol=1e-6)


def test_the_correction_undoes_the_known_displacement(corrected: dict[str, Path]) -> None:
    """The composed map (rigid, then displacement) against the truth, along PE, in mm."""
    disp = np.asarray(nib.load(corrected["out"] / f"{FMAP}_displacement.nii.gz").dataobj)
    rigid = load_transform(corrected["out"] / "sub-01" / "dwi"
                           / "sub-01_from-T1w_to-dwi_mode-image_xfm.txt")
    field = Displacement(disp, 1, np.array(ZOOMS))
    positions, _ = sample_positions(SHAPE, grid_affine(), field, rigid)
    _, shift = distorted(PEAK)
    truth = np.indices(SHAPE, dtype=float).reshape(3, -1)
    truth[1] += shift.ravel()
    reference = np.asarray(nib.load(corrected["t1w"]).dataobj)
    inside = (reference > 0.3 * reference.max()).ravel()
    error = np.abs(positions[1] - truth[1])[inside] * ZOOMS[1]
    before = np.abs(shift.ravel()[inside]) * ZOOMS[1]
    assert error.mean() < 0.4 * before.mean() and np.percentile(error, 95) < 0.4 * before.max()
    hz = np.asarray(nib.load(corrected["out"] / f"{FMAP}_fieldmap.nii.gz").dataobj)
    np.testing.assert_allclose(hz, disp / ZOOMS[1] / TOTAL_READOUT_TIME, rtol=1e-5, atol=1e-3)


def test_the_field_map_is_a_valid_bids_derivative(corrected: dict[str, Path]) -> None:
    out = corrected["out"]
    fmap = json.loads((out / f"{FMAP}_fieldmap.json").read_text())
    assert fmap["Units"] == "Hz" and fmap["B0FieldIdentifier"] == "mri2mri_sdc_sub01"
    assert fmap["IntendedFor"] == ["bids:raw:sub-01/dwi/sub-01_dwi.nii.gz"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["DatasetLinks"]["raw"] == (corrected["dwi"].parents[2]).resolve().as_uri()
    assert (out / f"{FMAP}_magnitude.nii.gz").is_file()
    assert bids_errors(out) == []


def test_the_sidecar_records_provenance_and_timings(corrected: dict[str, Path]) -> None:
    meta = json.loads((corrected["out"] / f"{SERIES}.json").read_text())
    sdc = meta["DistortionCorrection"]
    assert meta["PhaseEncodingDirection"] == "j" and meta["SkullStripped"] is False
    assert sdc["ModelTask"] == "T1w->b0" and sdc["Series"] == "sub-01_dwi.nii.gz"
    assert sdc["ReadOutFrom"] == {"PhaseEncodingDirection": "sub-01_dwi.json",
                                  "TotalReadoutTime": "sub-01_dwi.json"}
    stages = {"load", "rigid", "synthesis", "field", "resample"}  # written while writing
    assert set(sdc["Timings"]["cpu_s"]) == stages == set(sdc["Timings"]["wall_s"])
    assert 0 < sdc["Displacement"]["max_abs_displacement_mm"] < 10


def _run(command: list[str]) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name(command[0])
    return subprocess.run([str(exe), *command[1:]], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("sidecar", "words"), [
    ({"PhaseEncodingDirection": "j"}, "TotalReadoutTime is missing"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05, "EffectiveEchoSpacing": 0.002},
     "contradicts EffectiveEchoSpacing"),
])
def test_a_bad_sidecar_is_one_line_and_writes_nothing(tmp_path: Path, sidecar: dict,
                                                      words: str) -> None:
    paths = write_case(tmp_path / "raw", sidecar=sidecar)
    done = _run(_command(paths, tmp_path / "out"))
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert done.stderr.startswith(f"error: {paths['dwi'].with_name('sub-01_dwi.json')}: ")
    assert words in done.stderr and not (tmp_path / "out").exists()


def test_a_model_that_does_not_make_b0_is_refused(tmp_path: Path) -> None:
    paths = write_case(tmp_path / "raw")
    paths["model"] = channel_picker(tmp_path / "t1_to_t2.onnx", ["T1w"], "T2w")
    done = _run(_command(paths, tmp_path / "out"))
    assert done.returncode == 1 and "does not make a b0 from a T1w" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("model", "words"), [
    ("No-such-starter", "not a starter model name"), ("missing.onnx", "model file not found")])
def test_a_model_that_is_not_there_stops_before_any_work(tmp_path: Path, model: str,
                                                         words: str) -> None:
    """An unknown name or a missing file is one line before the rigid registration starts."""
    paths = write_case(tmp_path / "raw")
    paths["model"] = tmp_path / model if model.endswith(".onnx") else model
    done = _run(_command(paths, tmp_path / "out"))
    assert done.returncode == 1 and words in done.stderr, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "registering" not in done.stderr
    assert not (tmp_path / "out").exists()


def test_a_finished_run_says_the_method_is_experimental(corrected: dict[str, Path]) -> None:
    """Measured against known fields the correction does not yet beat none: every run says
    so, after its progress, pointing at the measurement."""
    said = corrected["stderr"].read_text()
    assert "experimental" in said and "docs/registration.md" in said
    assert said.index("experimental") > said.index("s]")  # after the progress lines


def test_existing_outputs_need_overwrite(corrected: dict[str, Path]) -> None:
    target = corrected["out"] / f"{SERIES}.nii.gz"
    before = target.stat().st_mtime_ns
    done = _run(_command(corrected, corrected["out"]))
    assert done.returncode == 1 and "pass --overwrite" in done.stderr
    assert target.stat().st_mtime_ns == before
    assert not list(corrected["out"].glob(".mri2mri-sdc-*"))


def test_a_known_shift_is_found_and_kept_along_the_phase_encoding_axis() -> None:
    """The field alone: a smooth object against itself moved by 1.5 voxels along j."""
    i, j, k = np.indices((40, 48, 24), dtype=float)
    obj = np.exp(-((i - 20) ** 2 / 150 + (j - 24) ** 2 / 200 + (k - 12) ** 2 / 50)) \
        * (1 + 0.3 * np.sin(i / 2.0) * np.cos(j / 2.5))
    moved = np.exp(-((i - 20) ** 2 / 150 + (j - 25.5) ** 2 / 200 + (k - 12) ** 2 / 50)) \
        * (1 + 0.3 * np.sin(i / 2.0) * np.cos((j - 1.5) / 2.5))
    found = estimate_displacement(moved.astype(np.float32), obj.astype(np.float32),
                                  np.array([2.0, 2.0, 2.5]), pe_axis=1)
    inside = obj > 0.3
    assert abs(float(np.median(found.voxels[inside])) - 1.5) < 0.2
    back = unwarp_series(moved.astype(np.float32), np.eye(4), found)
    assert np.abs(back - obj)[inside].mean() < 0.25 * np.abs(moved - obj)[inside].mean()


def test_the_qc_report_loads_in_a_headless_browser(corrected: dict[str, Path]) -> None:
    page_path = corrected["out"] / "sub-01_dwi_sdc.html"
    text = page_path.read_text()
    assert "edges of the T1w" in text and "Field map" in text and "flicker" in text
    problems: list[str] = []
    with headless_page(problems) as page:
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        sizes = page.evaluate("Array.from(document.images).map(i => i.complete ? "
                              "i.naturalWidth : 0)")
        assert len(sizes) == 6 and all(w > 0 for w in sizes), sizes
        animations = page.evaluate("Array.from(document.querySelectorAll('.flicker img.top'))"
                                   ".map(i => getComputedStyle(i).animationName)")
        assert animations == ["flick"]
        assert page.locator("h2", has_text="Before").count() >= 1
    assert problems == []


def test_a_3d_b0_is_corrected_too(tmp_path: Path) -> None:
    """A b=0 EPI (no b-values) in fmap/: corrected on its own grid, no .bval/.bvec written."""
    from mri2mri.runtime.registration.distortion_files import correct_distortion

    paths = write_case(tmp_path / "raw")
    epi = paths["dwi"].parents[1] / "fmap" / "sub-01_dir-AP_epi.nii.gz"
    epi.parent.mkdir()
    img = nib.load(paths["dwi"])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., 0], img.affine, img.header), epi)
    epi.with_name("sub-01_dir-AP_epi.json").write_text(json.dumps(
        {"PhaseEncodingDirection": "j", "TotalReadoutTime": TOTAL_READOUT_TIME}))
    result = correct_distortion(epi, paths["t1w"], tmp_path / "out", model=paths["model"],
                                device="cpu", report=False)
    out = tmp_path / "out" / "sub-01" / "fmap" / "sub-01_dir-AP_space-T1w_desc-sdc_epi.nii.gz"
    assert out in result.written and nib.load(out).shape == SHAPE
    assert not list((tmp_path / "out").rglob("*.bvec"))
    assert (tmp_path / "out" / f"{FMAP}_fieldmap.nii.gz").is_file()
