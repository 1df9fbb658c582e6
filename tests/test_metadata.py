"""Model metadata: the published JSON Schema, unknown keys (warning or error), old metadata."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import onnx
import pytest
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    volume,
)

from mri2mri.runtime import __version__
from mri2mri.runtime.core.cli_common import run_app
from mri2mri.runtime.core.errors import InputError, InputWarning
from mri2mri.runtime.metadata import (
    ModelMetadata,
    Normalisation,
    metadata_schema,
    schema_text,
    written_by_newer,
)
from mri2mri.runtime.synthesis.cli_run import app

REPO = Path(__file__).resolve().parents[1]
NEWER = "99.0.0"


def _metadata(**changes: object) -> dict:
    data = json.loads(ModelMetadata(sources=["T1w", "T2w"], target="PDw", pad_multiple=8,
                                    normalisation=Normalisation(target_scale=250.0)).to_json())
    data.update(changes)
    return data


def test_published_schema_is_the_one_the_code_generates() -> None:
    published = REPO / "docs" / "model-metadata.schema.json"
    assert published.read_text() == schema_text(), (
        "regenerate it: python -m mri2mri.runtime.metadata --schema "
        "> docs/model-metadata.schema.json")
    printed = subprocess.run([sys.executable, "-m", "mri2mri.runtime.metadata", "--schema"],
                             capture_output=True, text=True, check=True).stdout
    assert printed == published.read_text()


def test_schema_follows_the_dataclasses() -> None:
    schema = metadata_schema()
    written = _metadata()
    assert set(schema["properties"]) == set(written)  # every key the writer writes, no more
    assert schema["required"] == ["sources", "target"]
    assert schema["additionalProperties"] is True
    norm = schema["properties"]["normalisation"]
    assert norm["additionalProperties"] is False
    assert set(norm["properties"]) == set(written["normalisation"])
    assert norm["properties"]["percentile"]["type"] == "number"
    assert schema["properties"]["pad_multiple"] == {
        "type": "integer", "description": "Slices are padded to a multiple of this.",
        "default": 16}


def test_unknown_top_level_key_from_a_newer_version_warns_and_loads() -> None:
    data = _metadata(package_version=NEWER, colour="red", notes={"a": 1})
    with pytest.warns(InputWarning) as caught:
        meta = ModelMetadata.from_json(json.dumps(data), "new.onnx")
    [warning] = caught
    assert str(warning.message) == (
        f"new.onnx: this model was written by mri2mri {NEWER}, you run {__version__}; "
        "unknown fields, ignored: colour, notes; upgrade mri2mri")
    assert warning.message.path == Path("new.onnx")
    assert meta.task == "T1w+T2w->PDw" and meta.normalisation.target_scale == 250.0


def test_unknown_key_from_the_same_version_warns_without_upgrade_advice() -> None:
    data = _metadata(package_version=__version__, colour="red")
    with pytest.warns(InputWarning, match="unknown fields, ignored: colour$"):
        ModelMetadata.from_json(json.dumps(data), "same.onnx")


def test_unknown_key_in_normalisation_is_an_error() -> None:
    data = _metadata(package_version=NEWER)
    data["normalisation"]["clip"] = [0.0, 3.0]
    with pytest.raises(InputError) as exc:
        ModelMetadata.from_json(json.dumps(data), "new.onnx")
    assert str(exc.value) == (
        f"new.onnx: this model was written by mri2mri {NEWER}, you run {__version__}; "
        "unknown fields the runtime needs to run it correctly: normalisation.clip; "
        "upgrade mri2mri")


def test_wrong_types_are_an_error_naming_the_fields() -> None:
    data = _metadata(pad_multiple="8", sources=["T1w", 2])
    with pytest.raises(InputError, match=r"^m.onnx: mri2mri metadata: pad_multiple is string, "
                                         r"expected integer; sources\[1\] is integer, "
                                         r"expected string$"):
        ModelMetadata.from_json(json.dumps(data), "m.onnx")
    data = _metadata()
    data["normalisation"]["percentile"] = 99  # an integer is a JSON number
    assert ModelMetadata.from_json(json.dumps(data)).normalisation.percentile == 99


def test_old_metadata_without_the_newer_optional_keys_loads() -> None:
    old = {"sources": ["T1"], "target": "T2", "normalisation": {"target_scale": 3.0},
           "schema_version": 1}
    meta = ModelMetadata.from_json(json.dumps(old))
    assert meta == ModelMetadata(sources=["T1w"], target="T2w",
                                 normalisation=Normalisation(target_scale=3.0))
    assert meta.context == 0 and meta.training_summary == {} and meta.package_version


def test_version_order() -> None:
    assert written_by_newer("0.10.0", "0.9.2") and written_by_newer("1.0", "0.99")
    assert not written_by_newer("0.1.0", "0.1") and not written_by_newer("0.1.0", "0.2.0")
    assert not written_by_newer("0+unknown", "0.1.0")
    assert not written_by_newer("1.0.0", "0+unknown")  # cannot tell: no upgrade advice


def _with_metadata(model: Path, data: dict) -> Path:
    proto = onnx.load(model)
    proto.metadata_props[0].value = json.dumps(data)
    onnx.save(proto, model)
    return model


def test_run_prints_one_warning_line_then_synthesizes(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    model = channel_picker(tmp_path / "m.onnx", ["T1w"], "T2w")
    data = json.loads(ModelMetadata.from_onnx_props(
        {p.key: p.value for p in onnx.load(model).metadata_props}).to_json())
    _with_metadata(model, {**data, "package_version": NEWER, "colour": "red"})
    nib.save(nifti(volume((12, 14, 6))), tmp_path / "t1.nii.gz")
    args = ["--model", model, "--input", tmp_path / "t1.nii.gz", "--output",
            tmp_path / "t2.nii.gz"]
    with pytest.raises(SystemExit) as exc:
        run_app(app, [str(a) for a in args])
    err = capsys.readouterr().err
    assert exc.value.code == 0 and (tmp_path / "t2.nii.gz").is_file()
    assert (f"warning: {model}: this model was written by mri2mri {NEWER}, you run "
            f"{__version__}; unknown fields, ignored: colour; upgrade mri2mri\n") in err

    data["normalisation"]["clip"] = 3.0
    _with_metadata(model, data)
    with pytest.raises(SystemExit) as exc:
        run_app(app, [str(a) for a in [*args[:-1], tmp_path / "t2b.nii.gz"]])
    err = capsys.readouterr().err
    assert exc.value.code == 1 and not (tmp_path / "t2b.nii.gz").exists()
    assert err.startswith(f"error: {model}: this model was written by mri2mri") and \
        "normalisation.clip" in err
