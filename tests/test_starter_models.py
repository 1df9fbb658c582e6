"""Starter models by name (issue 31): the registry, `mri2mri-run --model NAME`, --list-models,
the BIDS App and `mri2mri-register --via NAME`, and what a damaged file or a wrong name gives.

The registry folder is pointed at a temporary one (``MRI2MRI_MODELS_DIR``) holding a stand-in
model (`onnx_fixtures.channel_picker`): the real starter models are trained elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)
from test_bad_inputs import run_cli
from test_cli_run import expected

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.models import (
    ENV,
    MANIFEST,
    add_starter,
    list_models,
    models_dir,
    resolve_model,
)
from mri2mri.runtime.models.registry import file_sha256, verify
from mri2mri.runtime.registration.cli import app as register_app
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

CARD = "# T1w-to-T2w (stand-in)\n\nTrained on nothing: a 1x1 convolution for the tests.\n"


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A registry folder with two stand-ins, made the registry through the environment."""
    folder = tmp_path / "models"
    add_starter(channel_picker(tmp_path / "t1_to_t2.onnx", ["T1w"], "T2w"), "T1w-to-T2w",
                "T1w -> T2w, stand-in for the tests", CARD, folder=folder)
    card = tmp_path / "card.md"
    card.write_text("# b0-to-T1w\n")
    add_starter(channel_picker(tmp_path / "b0_to_t1.onnx", ["b0"], "T1w", target_scale=1000.0),
                "b0-to-T1w", "b=0 -> T1w, stand-in\n  (for registration)", card, folder=folder)
    monkeypatch.setenv(ENV, str(folder))
    return folder


def test_manifest_records_each_file_with_its_checksum(registry: Path) -> None:
    manifest = json.loads((registry / MANIFEST).read_text())
    assert manifest["format"] == 1
    assert [m["name"] for m in manifest["models"]] == ["T1w-to-T2w", "b0-to-T1w"]
    for entry in manifest["models"]:
        path = registry / entry["file"]
        assert entry["file"] == f"{entry['name']}.onnx" and entry["card"] == f"{entry['name']}.md"
        assert entry["sha256"] == file_sha256(path) and entry["size"] == path.stat().st_size
    assert (registry / "T1w-to-T2w.md").read_text() == CARD
    assert (registry / "b0-to-T1w.md").read_text() == "# b0-to-T1w\n"
    assert list_models()[1].summary == "b=0 -> T1w, stand-in (for registration)"  # one line
    assert not [p for p in registry.iterdir() if p.name.startswith(".")]  # no temporaries


def test_add_starter_replaces_an_entry_and_refuses_bad_names(registry: Path,
                                                             tmp_path: Path) -> None:
    other = channel_picker(tmp_path / "other.onnx", ["T1w"], "T2w", target_scale=900.0)
    entry = add_starter(other, "T1w-to-T2w", "replaced", "card", folder=registry)
    models = list_models()
    assert [m.name for m in models] == ["T1w-to-T2w", "b0-to-T1w"]
    assert models[0] == entry and entry.sha256 == file_sha256(other)
    assert resolve_model("T1w-to-T2w").read_bytes() == other.read_bytes()
    for name in ("a/b", "x.onnx", "", "-x", "with space"):
        with pytest.raises(InputError, match="starter model name"):
            add_starter(other, name, "s", "c", folder=registry)
    with pytest.raises(InputError, match="summary is empty"):
        add_starter(other, "x", "  \n", "c", folder=registry)
    with pytest.raises(InputError, match="not a model file"):
        add_starter(tmp_path / "missing.onnx", "x", "s", "c", folder=registry)


def test_resolve_names_and_paths(registry: Path, tmp_path: Path) -> None:
    assert resolve_model("T1w-to-T2w") == registry / "T1w-to-T2w.onnx"
    assert resolve_model("t1w-to-t2w") == registry / "T1w-to-T2w.onnx"  # any case
    path = tmp_path / "t1_to_t2.onnx"
    assert resolve_model(path) == path and resolve_model(str(path)) == path
    missing = tmp_path / "nowhere.onnx"  # a path: loading it says what is wrong
    assert resolve_model(missing) == missing
    with pytest.raises(InputError, match="model file not found"):
        Synthesizer(missing)
    assert Synthesizer("T1w-to-T2w").model_path == registry / "T1w-to-T2w.onnx"


def test_run_by_name_synthesizes(registry: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = volume()
    src, out = tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"
    nib.save(nifti(data), src)
    code, stdout, err = run_cli(["--model", "T1w-to-T2w", "--input", f"T1w={src}",
                                 "--output", out, "--verbose"], capsys)
    assert code == 0, err
    assert "model T1w-to-T2w.onnx: T1w->T2w" in stdout and f"wrote {out}" in stdout
    np.testing.assert_allclose(nib.load(out).get_fdata(), expected(data), rtol=1e-5, atol=1e-3)
    assert "model=T1w-to-T2w.onnx" in str(nib.load(out).header["descrip"].astype(str))


def test_list_models(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run_cli(["--list-models"], capsys)
    lines = stdout.splitlines()
    assert code == 0 and lines[0] == f"starter models ({registry}):"
    assert lines[1:3] == ["  T1w-to-T2w  T1w -> T2w, stand-in for the tests",
                          "  b0-to-T1w   b=0 -> T1w, stand-in (for registration)"]
    assert "mri2mri-run --model NAME" in lines[3]
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(ENV, str(empty))
    code, stdout, _ = run_cli(["--list-models"], capsys)
    assert code == 0 and stdout.startswith("no starter models are packaged yet")
    monkeypatch.setenv(ENV, str(tmp_path / "typo"))
    code, _, err = run_cli(["--list-models"], capsys)
    assert code == 1 and err.strip() == (f"error: {tmp_path / 'typo'}: {ENV} names a folder "
                                         "that does not exist")


def test_a_tampered_model_is_refused_in_one_line(registry: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    src, out = tmp_path / "t1.nii.gz", tmp_path / "t2.nii.gz"
    nib.save(nifti(volume()), src)
    model = registry / "T1w-to-T2w.onnx"
    good = model.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0x01  # same size, one bit changed
    for damaged in (bytes(flipped), good[:-10]):
        model.write_bytes(damaged)
        code, stdout, err = run_cli(["--model", "T1w-to-T2w", "--input", src, "--output", out],
                                    capsys)
        assert code == 1 and not out.exists() and stdout == ""
        assert err.splitlines() == [f"error: {model}: checksum mismatch, the file is damaged "
                                    "or was changed; reinstall mri2mri"]
    model.unlink()
    code, _, err = run_cli(["--model", "T1w-to-T2w", "--input", src, "--output", out], capsys)
    assert code == 1 and err.strip() == (f"error: {model}: starter model T1w-to-T2w is listed "
                                         "but its file is missing; reinstall mri2mri")


def test_unknown_name_lists_the_known_ones(registry: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["--model", "T1w-to-PDw", "--input", tmp_path / "t1.nii.gz",
                            "--output", tmp_path / "o.nii.gz"], capsys)
    assert code == 1
    assert err.splitlines() == ["error: T1w-to-PDw: no such model file, and not a starter "
                                "model name (starter models: T1w-to-T2w, b0-to-T1w)"]


def test_a_broken_manifest_is_one_line(registry: Path) -> None:
    (registry / MANIFEST).write_text('{"format": 1, "models": [{"name": "x"}]}')
    with pytest.raises(InputError, match=r"starters.json: unreadable starter-model manifest"):
        resolve_model("T1w-to-T2w")
    (registry / MANIFEST).write_text("{")
    with pytest.raises(InputError, match="reinstall mri2mri"):
        list_models()


def test_bids_app_and_register_take_names(registry: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bids, out = tmp_path / "bids", tmp_path / "derivatives"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    nib.save(nifti(volume((12, 14, 5))), bids / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    code, stdout, err = run_cli([bids, out, "participant", "--model", "T1w-to-T2w",
                                 "--no-report"], capsys)
    assert code == 0 and "1 written, 0 failed" in stdout, err
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_desc-mri2mri_T2w.json").read_text())
    assert sidecar["Mri2mri"]["Model"] == {
        "File": "T1w-to-T2w.onnx", "Sha256": list_models()[0].sha256, "TrainingData": ""}
    static = nifti(volume((24, 26, 14), seed=3))
    nib.save(static, tmp_path / "sub-01_b0.nii.gz")
    shifted = static.affine.copy()
    shifted[:3, 3] += [2.0, -1.0, 0.0]
    nib.save(nifti(np.asarray(static.dataobj), shifted), tmp_path / "sub-01_T1w.nii.gz")
    args = ["--moving", str(tmp_path / "sub-01_T1w.nii.gz"),
            "--static", str(tmp_path / "sub-01_b0.nii.gz"),
            "--out-affine", str(tmp_path / "affine.txt"), "--via-mask", "none"]
    capsys.readouterr()
    assert exit_code(register_app, [*args, "--via", "b0-to-T1w"]) == 0
    assert "via b0-to-T1w.onnx" in capsys.readouterr().out
    assert exit_code(register_app, [*args, "--via", "b0-to-T2w", "--overwrite"]) == 1
    assert "b0-to-T2w: no such model file, and not a starter model name" in \
        capsys.readouterr().err


def test_the_packaged_registry_is_consistent(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever this checkout ships in runtime/models verifies, and nothing unlisted is there."""
    monkeypatch.delenv(ENV, raising=False)
    folder = models_dir()
    assert folder == Path(__file__).resolve().parents[1] / "runtime" / "models"
    listed = set()
    for model in list_models():
        assert verify(model) == folder / model.file
        assert (folder / model.card).is_file(), f"{model.name}: no model card"
        listed |= {model.file, model.card}
    shipped = {p.name for p in folder.iterdir() if p.suffix in (".onnx", ".md")}
    assert shipped == listed, f"files in runtime/models the manifest does not list: " \
                              f"{sorted(shipped - listed)}"


def test_every_shipped_model_carries_todays_ood_references(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A shipped model whose references predate the runtime's definitions would run with
    its checks 'not judged': every starter in runtime/models is refreshed, and recipes and
    manifest name the same models."""
    from mri2mri.runtime.synthesis import contrast, features
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer
    from mri2mri.starters.recipes import RECIPES

    monkeypatch.delenv(ENV, raising=False)
    models = list_models()
    assert {m.name for m in models} == set(RECIPES)
    for model in models:
        meta = Synthesizer(verify(model), device="cpu").meta
        assert meta.sources == list(RECIPES[model.name].sources), model.name
        for check in (features, contrast):
            record = meta.ood.get(check.KEY) or {}
            assert record.get("version") == check.DEFINITION_VERSION, \
                f"{model.name}: {check.KEY} reference is not today's (mri2mri-starter refresh)"
