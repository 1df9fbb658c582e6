"""`mri2mri-register BIDS_DIR OUTPUT_DIR participant --correct-distortion`: the BIDS App.

A tiny dataset from the distortion phantom: sub-01 (no session), sub-02 with ses-1, and
sub-03 whose T1w is missing. One run through the command (module fixture, a subprocess)
is checked for its names, the corrected series against its input, the b-vectors against
the single-series rotation, and the official validator; the Python function for reruns;
broken input for the one-line errors and the failing unit that does not stop the others.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bids_validation import bids_errors
from distortion_phantom import write_case
from onnx_fixtures import channel_picker, collect_sessions  # noqa: F401 - autouse: frees sessions

from mri2mri.runtime.registration import distortion_cli
from mri2mri.runtime.registration.distortion_apply import rotate_bvecs
from mri2mri.runtime.registration.distortion_bids import correct_dataset
from mri2mri.runtime.registration.distortion_outputs import Staging
from mri2mri.runtime.registration.io import load_transform

#: (input DWI, output prefix) of each unit, relative to the datasets.
UNITS = {"sub-01": ("sub-01/dwi/sub-01_dwi", "sub-01/dwi/sub-01"),
         "sub-02_ses-1": ("sub-02/ses-1/dwi/sub-02_ses-1_dwi", "sub-02/ses-1/dwi/sub-02_ses-1")}


def _dataset(root: Path) -> dict[str, Path]:
    paths = write_case(root)
    write_case(root, subject="02", session="1")
    write_case(root, subject="03")["t1w"].unlink()  # a DWI without its T1w: skipped
    return {"raw": root, "model": paths["model"]}


def _command(raw: Path, out: Path, model: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("mri2mri-register")
    return [str(exe), str(raw), str(out), "participant", "--correct-distortion", "--model",
            str(model), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("sdc_app")
    data = _dataset(root / "raw")
    out = root / "derivatives" / "sdc"
    out.parent.mkdir()
    done = subprocess.run(_command(data["raw"], out, data["model"]), capture_output=True,
                          text=True, timeout=300)
    return {**data, "out": out, "done": done}


def test_each_unit_is_written_with_bids_names(app: dict) -> None:
    done, out = app["done"], app["out"]
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == \
        "2 written, 0 failed, 1 skipped (missing sources: sub-03)"
    for n, (label, (_, prefix)) in enumerate(UNITS.items(), 1):
        for ext in (".nii.gz", ".json", ".bval", ".bvec"):
            assert (out / f"{prefix}_space-T1w_desc-sdc_dwi{ext}").is_file()
        fmap = prefix.replace("/dwi/", "/fmap/")
        for suffix in ("fieldmap", "magnitude", "displacement"):
            assert (out / f"{fmap}_desc-sdc_{suffix}.nii.gz").is_file()
        assert (out / f"{label}_dwi_sdc.html").is_file()  # the unit's QC page
        assert f"{label} ({n}/2): corrected: displacement" in done.stderr  # progress per unit
    assert "sub-03: skipped: no DWI" in done.stderr and not (out / "sub-03").exists()
    assert done.stderr.count("is experimental") == 1  # once for the dataset, not per unit
    assert not list(out.glob(".mri2mri-sdc-*"))


def test_the_series_keeps_its_grid_and_its_bvecs_turn_as_one_series_does(app: dict) -> None:
    raw, out = app["raw"], app["out"]
    sha = hashlib.sha256(app["model"].read_bytes()).hexdigest()
    for source, prefix in UNITS.values():
        src = nib.load(raw / f"{source}.nii.gz")
        img = nib.load(out / f"{prefix}_space-T1w_desc-sdc_dwi.nii.gz")
        assert img.shape == src.shape == (*img.shape[:3], 4)
        np.testing.assert_allclose(img.affine, src.affine)
        assert (out / f"{prefix}_space-T1w_desc-sdc_dwi.bval").read_text().split() == \
            (raw / f"{source}.bval").read_text().split()
        rigid = load_transform(out / f"{prefix}_from-T1w_to-dwi_mode-image_xfm.txt")
        expected = rotate_bvecs(np.loadtxt(raw / f"{source}.bvec"), src.affine, rigid)
        np.testing.assert_allclose(np.loadtxt(out / f"{prefix}_space-T1w_desc-sdc_dwi.bvec"),
                                   expected, atol=2e-6)
        meta = json.loads((out / f"{prefix}_space-T1w_desc-sdc_dwi.json").read_text())
        assert meta["DistortionCorrection"]["ModelSha256"] == sha
        fmap = json.loads((out / f"{prefix.replace('/dwi/', '/fmap/')}_desc-sdc_fieldmap.json")
                          .read_text())
        assert fmap["Units"] == "Hz" and fmap["IntendedFor"] == [f"bids:raw:{source}.nii.gz"]


def test_the_derivative_passes_the_bids_validator(app: dict) -> None:
    description = json.loads((app["out"] / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mri2mri"
    assert "participant --correct-distortion" in description["GeneratedBy"][0]["Description"]
    assert bids_errors(app["out"]) == []


def test_a_rerun_skips_finished_units(app: dict, tmp_path: Path) -> None:
    out = app["out"]
    marks = {p: p.stat().st_mtime_ns for p in out.rglob("*_dwi.json")}
    lines: list[str] = []
    summary = correct_dataset(app["raw"], out, model=app["model"], progress=lines.append)
    assert sorted(summary.done) == sorted(UNITS) and not summary.written and not summary.failed
    assert summary.skipped == ["sub-03"]
    assert "sub-01 (1/2): already done, skipped (--overwrite redoes it)" in lines
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*_dwi.json")} == marks
    # Units another model made are not passed off as this one's.
    other = channel_picker(tmp_path / "other.onnx", ["T1w"], "b0", target_scale=300.0)
    summary = correct_dataset(app["raw"], out, model=other, sessions=["1"])
    assert list(summary.failed) == ["sub-02_ses-1"]
    assert "made by another model" in summary.failed["sub-02_ses-1"]
    # A unit without its mark (a run killed while moving its files into place) is redone,
    # its leftovers replaced without --overwrite; --overwrite redoes a finished one.
    mark = out / f"{UNITS['sub-01'][1]}_space-T1w_desc-sdc_dwi.json"
    mark.unlink()
    summary = correct_dataset(app["raw"], out, model=app["model"], participants=["sub-01"])
    assert list(summary.written) == ["sub-01"] and mark.is_file()
    summary = correct_dataset(app["raw"], out, model=app["model"], participants=["02"],
                              overwrite=True)
    assert list(summary.written) == ["sub-02_ses-1"] and not summary.done


def test_the_series_sidecar_is_moved_into_place_last(tmp_path: Path) -> None:
    """What marks a finished unit: the staged files move in order, the mark after the rest."""
    finals = [tmp_path / "out" / name for name in ("a.nii.gz", "a.json", "b.nii.gz")]
    with Staging(tmp_path / "out") as staging:
        for final in finals:
            staging.path(final).write_text(final.name)
        assert staging.commit(last=finals[1]) == [finals[0], finals[2], finals[1]]
    assert all(f.read_text() == f.name for f in finals)


def test_a_broken_sidecar_fails_its_unit_in_one_line_and_not_the_others(
        app: dict, tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(app["raw"], raw)
    broken = raw / "sub-01" / "dwi" / "sub-01_dwi.json"
    broken.write_text('{"PhaseEncodingDirection": "j",')
    done = subprocess.run(_command(raw, tmp_path / "alone", app["model"],
                                   "--participant-label", "01"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout.strip() == "0 written, 1 failed"
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 1, done.stderr
    assert failed[0].startswith(f"failed sub-01: {broken}: not a readable JSON sidecar (")
    assert "Traceback" not in done.stderr and not (tmp_path / "alone").exists()
    # With the others: they are corrected, the command still exits 1.
    out = tmp_path / "out"
    summary = correct_dataset(raw, out, model=app["model"])
    assert list(summary.failed) == ["sub-01"] and list(summary.written) == ["sub-02_ses-1"]
    assert not (out / "sub-01").exists() and (out / "sub-02_ses-1_dwi_sdc.html").is_file()


def _main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        distortion_cli.main([str(a) for a in argv])
    return int(exc.value.code or 0), capsys.readouterr().err


def test_bad_dataset_input_is_one_line_and_writes_nothing(
        app: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw, out = app["raw"], tmp_path / "out"
    t2w = channel_picker(tmp_path / "t1_to_t2.onnx", ["T1w"], "T2w")
    for extra, words in ((["--participant-label", "09"], f"{raw}: no participant sub-09"),
                         (["--model", t2w], "does not make a b0 from a T1w"),
                         (["--dwi", raw / UNITS["sub-01"][0]], "--dwi: for one series")):
        code, err = _main([raw, out, "participant", "--correct-distortion", "--model",
                           app["model"], "--device", "cpu", *extra], capsys)
        assert code == 1 and err.startswith("error: ") and words in err, err
        assert err.strip().count("\n") == 0 and not out.exists()
    code, err = _main([raw, out, "group", "--correct-distortion"], capsys)
    assert code == 1 and "only the participant level" in err
