"""Every kind of bad input to `mri2mri-run`: one stderr line naming the file, exit 1, no output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)

from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.synthesis.cli_run import app


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        run_app(app, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Good models and images plus one bad file of each kind."""
    d = tmp_path_factory.mktemp("bad")
    f = {
        "model": channel_picker(d / "model.onnx", ["T1w"], "T2w"),
        "model2": channel_picker(d / "model2.onnx", ["T1w", "T2w"], "PDw"),
        "no_meta": channel_picker(d / "plain.onnx", ["T1w"], "T2w", with_metadata=False),
    }
    data = volume((12, 14, 6))

    def save(name: str, img: nib.Nifti1Image) -> None:
        f[name] = d / f"{name}.nii.gz"
        nib.save(img, f[name])

    save("good", nifti(data))
    save("other_grid", nifti(volume((10, 12, 5)), np.diag([2.4, 2.4, 3.6, 1.0])))
    save("flat2d", nib.Nifti1Image(data[..., 0], np.eye(4)))
    save("dwi4d", nib.Nifti1Image(np.stack([data, data * 0.5], axis=-1), np.eye(4)))
    nan = data.copy()
    nan[3, 4, 2] = np.nan
    save("nan", nifti(nan))
    inf = data.copy()
    inf[5, 5, 1] = np.inf
    save("inf", nifti(inf))
    save("zeros", nifti(np.zeros_like(data)))
    raw = f["good"].read_bytes()
    f["truncated"] = d / "truncated.nii.gz"
    f["truncated"].write_bytes(raw[: len(raw) // 2])
    f["text"] = d / "notes.txt"
    f["text"].write_text("not an image\n")
    f["fake_nifti"] = d / "fake.nii"
    f["fake_nifti"].write_bytes(b"\x00" * 100)
    f["not_onnx"] = d / "model_garbage.onnx"
    f["not_onnx"].write_bytes(b"this is not a protobuf \xff\xfe" * 10)
    f["missing"] = d / "does_not_exist.nii.gz"
    return f


Case = Callable[[dict[str, Path], Path], tuple[list[object], str, str]]

# Each case: (argv, file the message must name, a phrase of the problem).
CASES: dict[str, Case] = {
    "missing file": lambda f, o: (["--input", f["missing"]], f["missing"], "not found"),
    "not NIfTI": lambda f, o: (["--input", f["text"]], f["text"], "not a NIfTI"),
    "fake NIfTI": lambda f, o: (["--input", f["fake_nifti"]], f["fake_nifti"], "NIfTI"),
    "corrupted .nii.gz": lambda f, o: (["--input", f["truncated"]], f["truncated"], "corrupt"),
    "2D data": lambda f, o: (["--input", f["flat2d"]], f["flat2d"], "2D"),
    "4D without b-values": lambda f, o: (["--input", f["dwi4d"]], f["dwi4d"], "b-values"),
    "NaN voxels": lambda f, o: (["--input", f["nan"]], f["nan"], "NaN or infinite"),
    "inf voxels": lambda f, o: (["--input", f["inf"]], f["inf"], "NaN or infinite"),
    "all-zero volume": lambda f, o: (["--input", f["zeros"]], f["zeros"], "all voxels are zero"),
    "model not ONNX": lambda f, o: (["--model", f["not_onnx"], "--input", f["good"]],
                                    f["not_onnx"], "not a usable ONNX model"),
    "model is a NIfTI": lambda f, o: (["--model", f["good"], "--input", f["good"]],
                                      f["good"], "ONNX"),
    "ONNX without metadata": lambda f, o: (["--model", f["no_meta"], "--input", f["good"]],
                                           f["no_meta"], "no mri2mri metadata"),
    "missing model": lambda f, o: (["--model", f["missing"], "--input", f["good"]],
                                   f["missing"], "model file not found"),
    "wrong contrast name": lambda f, o: (["--input", f"T2w={f['good']}"], f["good"],
                                         "not a source of model T1w->T2w"),
    "unknown contrast name": lambda f, o: (["--input", f"flair={f['good']}"], f["good"],
                                           "unknown contrast"),
    "missing source": lambda f, o: (["--model", f["model2"], "--input", f"T1w={f['good']}"],
                                    f["model2"], "needs a T2w input"),
    "different grids": lambda f, o: (["--model", f["model2"], "--input", f"T1w={f['good']}",
                                      "--input", f"T2w={f['other_grid']}"], f["other_grid"],
                                     "--resample-to-first"),
    "output directory missing": lambda f, o: (["--input", f["good"], "--output",
                                               o / "nope" / "out.nii.gz"], o / "nope",
                                              "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_one_line_error_no_output(case: str, files: dict[str, Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    extra, named, problem = CASES[case](files, tmp_path)
    argv = [*extra]
    if "--model" not in argv:
        argv = ["--model", files["model"], *argv]
    if "--output" not in argv:
        argv += ["--output", tmp_path / "out.nii.gz"]
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(named) in lines[0] and problem in lines[0], err
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file


def test_existing_output_is_kept_without_overwrite(files: dict[str, Path], tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"precious")
    argv = ["--model", files["model"], "--input", files["good"], "--output", out]
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and str(out) in err and "--overwrite" in err
    assert out.read_bytes() == b"precious"
    code, _, _ = run_cli([*argv, "--overwrite"], capsys)
    assert code == 0 and nib.load(out).shape == (12, 14, 6)


def test_failure_during_synthesis_leaves_no_partial_file(files: dict[str, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """An error after the work started (here: while writing) must not leave a file behind."""
    def broken_save(img: nib.Nifti1Image, path: str) -> None:
        Path(path).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        run_app(app, [str(a) for a in ["--model", files["model"], "--input", files["good"],
                                       "--output", tmp_path / "out.nii.gz"]])
    assert list(tmp_path.iterdir()) == []


def test_model_whose_network_disagrees_with_its_metadata(tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    model = channel_picker(tmp_path / "m.onnx", ["T1w", "T2w"], "PDw")
    proto = onnx.load(model)
    proto.metadata_props[0].value = proto.metadata_props[0].value.replace(
        '"sources": ["T1w", "T2w"]', '"sources": ["T1w"]')
    onnx.save(proto, model)
    code, _, err = run_cli(["--model", model, "--input", tmp_path / "x.nii.gz", "--output",
                            tmp_path / "o.nii.gz"], capsys)
    assert code == 1 and str(model) in err and "2 channel(s)" in err
