"""`mri2mri-run` end to end: single subjects, DWI b=0 inputs, devices and BIDS batch mode."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)
from test_bad_inputs import run_cli

from mri2mri.runtime.engine import providers
from mri2mri.runtime.imaging.normalize import foreground_mask, intensity_scale
from mri2mri.runtime.synthesis.cli_run import parse_input
from mri2mri.runtime.synthesis.synthesizer import Synthesizer


def expected(data: np.ndarray, target_scale: float = 500.0) -> np.ndarray:
    return data * (target_scale / intensity_scale(data, foreground_mask(data)))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_models")
    return {"t1": channel_picker(d / "t1_to_t2.onnx", ["T1w"], "T2w"),
            "b0": channel_picker(d / "b0_to_t1.onnx", ["b0"], "T1w"),
            "two": channel_picker(d / "two.onnx", ["T1w", "T2w"], "PDw", pick=1)}


def test_single_subject_named_and_unnamed(models: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    data = volume()
    src = tmp_path / "sub_T1w.nii.gz"
    nib.save(nifti(data), src)
    for i, given in enumerate([f"T1w={src}", f"t1={src}", str(src)]):
        out = tmp_path / f"out{i}.nii.gz"
        code, stdout, _ = run_cli(["--model", models["t1"], "--input", given, "--output", out],
                                  capsys)
        assert code == 0 and f"wrote {out}" in stdout
        np.testing.assert_allclose(nib.load(out).get_fdata(), expected(data), rtol=1e-5,
                                   atol=1e-3)


def test_verbose_reports_provider_threads_and_timings(models: dict[str, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t1.nii.gz"
    nib.save(nifti(volume()), src)
    code, stdout, _ = run_cli(["--model", models["t1"], "--input", src, "--output",
                               tmp_path / "o.nii.gz", "--device", "cpu", "--threads", "1",
                               "--batch-size", "3", "--verbose"], capsys)
    assert code == 0
    assert "provider CPU, 1 CPU thread(s), batch 3" in stdout
    assert "timings: load" in stdout and "inference" in stdout and "write" in stdout


def test_two_inputs_in_any_order(models: dict[str, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    t1, t2 = volume(seed=1), volume(seed=2)
    nib.save(nifti(t1), tmp_path / "t1.nii.gz")
    nib.save(nifti(t2), tmp_path / "t2.nii.gz")
    code, _, _ = run_cli(["--model", models["two"], "--input", f"T2w={tmp_path / 't2.nii.gz'}",
                          "--input", f"T1w={tmp_path / 't1.nii.gz'}", "--output",
                          tmp_path / "pd.nii.gz"], capsys)
    assert code == 0
    np.testing.assert_allclose(nib.load(tmp_path / "pd.nii.gz").get_fdata(), expected(t2),
                               rtol=1e-5, atol=1e-3)


def test_dwi_with_bval_uses_mean_b0(models: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    b0 = volume((14, 16, 6), seed=5)
    series = np.stack([b0 * 0.9, b0 * 0.3, b0 * 1.1, b0 * 0.2], axis=-1)  # b = 0, 1000, 5, 1000
    dwi, bval = tmp_path / "dwi.nii.gz", tmp_path / "dwi.bval"
    nib.save(nifti(series), dwi)
    bval.write_text("0 1000 5 1000\n")
    out = tmp_path / "t1.nii.gz"
    code, _, _ = run_cli(["--model", models["b0"], "--input", f"b0={dwi}", "--bval", bval,
                          "--output", out], capsys)
    assert code == 0
    assert nib.load(out).shape == b0.shape
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected(b0), rtol=1e-4, atol=1e-3)
    code, _, err = run_cli(["--model", models["t1"], "--input", dwi, "--output",
                            tmp_path / "x.nii.gz"], capsys)
    assert code == 1 and "without b-values" in err


def test_device_cuda_is_never_a_silent_cpu_run(models: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "t1.nii.gz"
    nib.save(nifti(volume()), src)
    out = tmp_path / "o.nii.gz"
    code, stdout, err = run_cli(["--model", models["t1"], "--input", src, "--output", out,
                                 "--device", "cuda", "--verbose"], capsys)
    if code == 0:  # a machine with a working GPU: it must really have been used
        assert providers.CUDA not in providers._BROKEN and "provider CUDA" in stdout
    else:  # one line naming the cause, as recorded when CUDA failed to start
        assert err.strip().splitlines() == [f"error: --device cuda: CUDA did not start "
                                            f"({providers._BROKEN[providers.CUDA]}); use "
                                            "--device cpu or auto"]
        assert not out.exists()
    auto = Synthesizer(models["t1"], device="auto")
    assert auto.provider == auto.session.get_providers()[0]


def test_parse_input() -> None:
    assert parse_input("T1w=a.nii.gz") == ("T1w", Path("a.nii.gz"))
    assert parse_input("b=0=dwi.nii.gz") == ("b=0", Path("dwi.nii.gz"))
    assert parse_input("data/run=1/t1.nii.gz") == (None, Path("data/run=1/t1.nii.gz"))
    assert parse_input("t1.nii.gz") == (None, Path("t1.nii.gz"))


def _bids(root: Path) -> Path:
    """Four subjects: two good, one with a truncated T1w, one without a T1w."""
    for i, sid in enumerate(["sub-01", "sub-02", "sub-03", "sub-04"]):
        anat = root / sid / "anat"
        anat.mkdir(parents=True)
        img = nifti(volume((12, 14, 5), seed=i))
        nib.save(img, anat / f"{sid}_T2w.nii.gz")
        if sid != "sub-04":
            nib.save(img, anat / f"{sid}_T1w.nii.gz")
    broken = root / "sub-03" / "anat" / "sub-03_T1w.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    return root


def test_bids_batch_continues_past_failures(models: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    bids, out = _bids(tmp_path / "bids"), tmp_path / "derivatives"
    code, stdout, err = run_cli(["--model", models["t1"], "--bids", bids, "--out", out], capsys)
    assert code == 1
    assert "2 written, 1 failed, 1 skipped (missing sources: sub-04)" in stdout
    assert "failed sub-03" in err and "sub-03_T1w.nii.gz" in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert written == ["sub-01/anat/sub-01_desc-mri2mri_T2w.nii.gz",
                       "sub-02/anat/sub-02_desc-mri2mri_T2w.nii.gz"]
    assert not (out / "sub-03").exists()
    src = nib.load(bids / "sub-02" / "anat" / "sub-02_T1w.nii.gz")
    synth = nib.load(out / written[1])
    np.testing.assert_allclose(synth.affine, src.affine)
    np.testing.assert_allclose(synth.get_fdata(), expected(src.get_fdata()), rtol=1e-5,
                               atol=1e-3)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "mri2mri"
    # A second run skips finished outputs (and retries the failed one) unless asked to redo.
    code, stdout, _ = run_cli(["--model", models["t1"], "--bids", bids, "--out", out], capsys)
    assert code == 1 and "0 written, 1 failed, 2 already done" in stdout
    code, stdout, _ = run_cli(["--model", models["t1"], "--bids", bids, "--out", out,
                               "--overwrite"], capsys)
    assert "2 written, 1 failed" in stdout


def test_bids_batch_with_dwi_b0_sources(models: dict[str, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """b0 -> T1w over a BIDS tree: each 4D DWI is reduced to its mean b=0 via its .bval."""
    bids, out = tmp_path / "bids", tmp_path / "synth"
    b0s = {}
    for i, sid in enumerate(["sub-a", "sub-b"]):
        (bids / sid / "dwi").mkdir(parents=True)
        b0s[sid] = volume((10, 12, 5), seed=10 + i)
        series = np.stack([b0s[sid], b0s[sid] * 0.4, b0s[sid]], axis=-1)
        nib.save(nifti(series, np.diag([2.5, 2.5, 3.5, 1.0])), bids / sid / "dwi" /
                 f"{sid}_dwi.nii.gz")
        (bids / sid / "dwi" / f"{sid}_dwi.bval").write_text("0 1000 0\n")
    code, stdout, _ = run_cli(["--model", models["b0"], "--bids", bids, "--out", out], capsys)
    assert code == 0 and "2 written, 0 failed" in stdout
    for sid, b0 in b0s.items():
        synth = nib.load(out / sid / "anat" / f"{sid}_desc-mri2mri_T1w.nii.gz")
        np.testing.assert_allclose(synth.affine, np.diag([2.5, 2.5, 3.5, 1.0]))
        np.testing.assert_allclose(synth.get_fdata(), expected(b0), rtol=1e-5, atol=1e-3)


def test_mode_options_are_exclusive(models: dict[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--model", models["t1"], "--bids", tmp_path, "--output",
                            tmp_path / "o.nii.gz"], capsys)
    assert code == 1 and "either --input" in err
    code, _, err = run_cli(["--model", models["t1"], "--bids", tmp_path / "none", "--out",
                            tmp_path / "o"], capsys)
    assert code == 1 and "dataset directory not found" in err


def test_report_for_one_subject(models: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """--report writes <output stem>_report.html beside the output; never by default, never over
    an existing page without --overwrite (refused before any work)."""
    src = tmp_path / "t1.nii.gz"
    nib.save(nifti(volume()), src)
    out, page = tmp_path / "sub-01_T2w.nii.gz", tmp_path / "sub-01_T2w_report.html"
    code, _, _ = run_cli(["--model", models["t1"], "--input", src, "--output", out], capsys)
    assert code == 0 and out.exists() and not page.exists()
    out.unlink()
    code, stdout, _ = run_cli(["--model", models["t1"], "--input", src, "--output", out,
                               "--report"], capsys)
    assert code == 0 and f"report: {page}" in stdout
    text = page.read_text()
    assert "input T1w: t1.nii.gz" in text and "synthesized T2w: sub-01_T2w.nii.gz" in text
    out.unlink()
    code, _, err = run_cli(["--model", models["t1"], "--input", src, "--output", out,
                            "--report"], capsys)
    assert code == 1 and err.strip() == (f"error: {page}: output exists; pass --overwrite to "
                                         "replace it") and not out.exists()
    code, _, _ = run_cli(["--model", models["t1"], "--input", src, "--output", out,
                          "--report", "--overwrite"], capsys)
    assert code == 0 and page.read_text() != text  # a new page (new timings)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_report_for_a_dwi_input_uses_the_given_bval(models: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    b0 = volume((14, 16, 6), seed=5)
    dwi, bval = tmp_path / "dwi.nii.gz", tmp_path / "elsewhere.bval"
    nib.save(nifti(np.stack([b0, b0 * 0.3], axis=-1)), dwi)
    bval.write_text("0 1000\n")
    out = tmp_path / "t1w.nii"
    code, stdout, err = run_cli(["--model", models["b0"], "--input", dwi, "--bval", bval,
                                 "--output", out, "--report"], capsys)
    assert code == 0, err
    assert "input b0: dwi.nii.gz" in (tmp_path / "t1w_report.html").read_text()


def test_a_report_that_fails_takes_the_output_with_it(
        models: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No half-finished result: the command fails as a whole and can simply be rerun."""
    from mri2mri.runtime.core.errors import InputError
    from mri2mri.runtime.synthesis import cli_run

    def broken(path: Path, *args: object, **kwargs: object) -> Path:
        raise InputError(path, "disk full")

    monkeypatch.setattr(cli_run, "write_unit_report", broken)
    src, out = tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"
    nib.save(nifti(volume()), src)
    code, _, err = run_cli(["--model", models["t1"], "--input", src, "--output", out,
                            "--report"], capsys)
    assert code == 1 and err.strip() == f"error: {tmp_path / 't2_report.html'}: disk full"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.nii.gz"]
