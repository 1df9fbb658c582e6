"""`mri2mri-bench distortion`: the truth it remakes, its scores, its outputs, its errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx_fixtures import channel_picker, collect_sessions  # noqa: F401 - autouse: frees sessions

from mri2mri.benchmarks.distortion import run_distortion_benchmark
from mri2mri.benchmarks.distortion.truth import Truth, subject_truth
from mri2mri.runtime.core.errors import InputError


@pytest.fixture(scope="module")
def epi_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two subjects at 4 mm with an EPI b=0 (64 x 64 x 28 voxels of 3.5 x 3.5 x 4.7 mm)."""
    from mri2mri.data.simulate.demo_cohort import generate_cohort

    return generate_cohort(tmp_path_factory.mktemp("epi") / "cohort", subjects=2, seed=1,
                           resolution=4.0, epi=True, jobs=1)


@pytest.fixture(scope="module")
def run(epi_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("bench") / "out"
    model = channel_picker(out.parent / "t1w_to_b0.onnx", ["T1w"], "b0")
    summary = run_distortion_benchmark(epi_cohort, out, model=str(model), ants=False)
    return {"out": out, "summary": summary, "model": model}


def _rows(out: Path) -> dict[tuple[str, str], dict]:
    rows = [json.loads(p.read_text())["row"] for p in sorted((out / "cache").glob("*/*.json"))]
    return {(r["subject"], r["method"]): r for r in rows}


def test_the_truth_is_the_field_the_b0_was_made_with(run: dict) -> None:
    """No correction's error is the true displacement itself; the reference (the estimation
    given the true undistorted b=0) removes most of it."""
    rows = _rows(run["out"])
    for subject in ("sub-001", "sub-002"):
        truth = Truth.load(run["out"] / "truth" / subject)
        expected = np.abs(truth.displacement_mm[truth.brain]).mean()
        assert rows[(subject, "none")]["pe_mean_mm"] == pytest.approx(expected, rel=1e-5)
        assert 0.05 < expected < 2.0 and truth.brain.sum() > 1000
        assert rows[(subject, "reference")]["pe_mean_mm"] < 0.7 * expected
        # The field in Hz and the displacement agree through the read-out of the sidecar.
        assert np.allclose(truth.field_hz * 0.05 / 2.0 * 3.5, truth.displacement_mm, atol=1e-3)
        assert {"field_max_mm", "level_free_psnr"} <= set(rows[(subject, "ours_no_distortion")])


def test_outputs_and_targets(run: dict) -> None:
    out, summary = run["out"], run["summary"]
    assert {"none", "rigid", "affine", "ours", "reference", "ours_no_distortion"} == \
        set(summary["means"])
    assert {"pe_mean_mm", "pe_p95_mm", "cpu_s", "reference_gap_mm",
            "no_harm_field_max_mm"} <= set(summary["targets"])
    assert all(isinstance(t["met"], bool) for t in summary["targets"].values())
    assert any(c["a"] == "reference" and c["metric"] == "pe_mean_mm"
               for c in summary["comparisons"])
    table = (out / "table.md").read_text()
    assert "| ours vs reference | pe_mean_mm |" in table and "sub-002" in table
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["subject", "method"] and "cpu_field_s" in header
    for name in ("displacement_mm", "field_hz", "undistorted_b0", "brain"):
        assert (out / "truth" / "sub-001" / f"{name}.nii.gz").is_file()


def test_a_rerun_reuses_the_cache(run: dict, epi_cohort: Path, tmp_path: Path) -> None:
    """Nothing is recomputed on a rerun; another model recomputes only the model's rows."""
    folder = run["out"] / "cache" / "sub-001"
    before = {p.name: p.read_text() for p in folder.glob("*.json")}
    assert {"none.json", "ours.json", "reference.json", "ours_no_distortion.json"} <= set(before)
    again = run_distortion_benchmark(epi_cohort, run["out"], model=str(run["model"]), ants=False)
    assert again["means"] == run["summary"]["means"]
    assert {p.name: p.read_text() for p in folder.glob("*.json")} == before
    other = channel_picker(tmp_path / "other.onnx", ["T1w"], "b0", target_scale=250.0)
    lines: list[str] = []
    run_distortion_benchmark(epi_cohort, run["out"], model=str(other), ants=False,
                             subjects=["sub-001"], progress=lines.append)
    assert [x for x in lines if x.startswith("sub-001:")] == [
        "sub-001: ours", "sub-001: ours on the b=0 without off-resonance (no-harm check)"]
    after = {p.name: p.read_text() for p in folder.glob("*.json")}
    assert after["reference.json"] == before["reference.json"]
    assert after["ours.json"] != before["ours.json"]
    run_distortion_benchmark(epi_cohort, run["out"], model=str(run["model"]), ants=False,
                             subjects=["sub-001"])  # the module's other tests read these rows


def test_a_cohort_the_simulator_no_longer_makes_is_an_error(epi_cohort: Path,
                                                             tmp_path: Path) -> None:
    copy = tmp_path / "cohort"
    shutil.copytree(epi_cohort, copy)
    path = copy / "dataset_description.json"
    desc = json.loads(path.read_text())
    desc["SubjectParameters"]["sub-001"]["epi"]["frontal_peak_hz"] += 1.0
    path.write_text(json.dumps(desc))
    with pytest.raises(InputError, match="no longer draws"):
        subject_truth(copy, "sub-001", tmp_path / "truth")


def test_a_pseudo_dwi_cohort_needs_its_source(epi_cohort: Path, tmp_path: Path) -> None:
    """The cohort's own T1w/T2w stand in for a real dataset: the remade b=0 must equal the
    stored one voxel for voxel, and another source is refused."""
    from mri2mri.data.simulate.epi import EpiProtocol
    from mri2mri.data.simulate.pseudo_dwi import make_pseudo_dwi

    protocol = EpiProtocol(voxel_mm=(3.5, 3.5, 4.7), matrix=(64, 64, 28),
                           total_readout_time=0.025)
    pseudo = make_pseudo_dwi(epi_cohort, tmp_path / "pseudo", protocol=protocol)
    truth = subject_truth(pseudo, "sub-002", tmp_path / "truth", source=epi_cohort)
    assert truth.brain.sum() > 1000 and np.abs(truth.displacement_mm).max() > 0.5
    with pytest.raises(InputError, match="needs --source"):
        subject_truth(pseudo, "sub-001", tmp_path / "truth2")
    other = tmp_path / "other"
    shutil.copytree(epi_cohort, other)
    shutil.rmtree(other / "sub-001")
    with pytest.raises(InputError):
        subject_truth(pseudo, "sub-002", tmp_path / "truth3", source=other)


def test_the_command_refuses_a_cohort_without_an_epi_b0(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "dataset_description.json").write_text(json.dumps(
        {"Name": "x", "BIDSVersion": "1.10.0", "SimulationParameters": {"seed": 0}}))
    exe = Path(sys.executable).with_name("mri2mri-bench")
    done = subprocess.run([str(exe), "distortion", "--data", str(tmp_path / "plain"), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "not a cohort with an EPI b=0" in done.stderr


def test_a_difference_in_blur_is_matched_not_taken_for_a_displacement(epi_cohort: Path) -> None:
    """A reference smoother than the acquired b=0 (as a synthesized one often is): without
    matching, cross-correlation stretches every edge; matched, far less moves."""
    import nibabel as nib
    from scipy import ndimage

    from mri2mri.runtime.imaging.nifti import load_volume
    from mri2mri.runtime.registration.distortion_field import (
        FieldSettings,
        estimate_displacement,
        match_blur,
    )
    from mri2mri.runtime.registration.masks import brain_mask

    dwi = epi_cohort / "sub-001" / "dwi" / "sub-001_dwi.nii.gz"
    b0 = load_volume(dwi, dwi.with_name("sub-001_dwi.bval"))
    image, brain = np.asarray(b0.dataobj, np.float32), brain_mask(b0)
    smoother = ndimage.gaussian_filter(image, 0.8)
    _, _, sigma_image, sigma_smoother = match_blur(image, smoother, brain)
    assert abs(sigma_image - 0.8) < 0.05 and sigma_smoother == 0.0
    moved = {m: float(np.abs(estimate_displacement(
        image, smoother, nib.affines.voxel_sizes(b0.affine), 1,
        settings=FieldSettings(match_resolution=m)).mm[brain]).mean()) for m in (False, True)}
    assert moved[True] < 0.4 * moved[False]
