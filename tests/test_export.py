"""ONNX export: metadata round trip, parity with PyTorch, dynamic axes, bad checkpoints, CLI."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from test_train_cohort import TINY, tiny_cohort_dir, tiny_run
from typer.testing import CliRunner

from mri2mri.export import cli as export_cli
from mri2mri.export import onnx_export
from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from mri2mri.train.inference import model_from_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    run = tiny_run(tmp_path_factory)
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return run, export_checkpoint(run.best_checkpoint, out)


def test_export_metadata_round_trip(exported):
    run, report = exported
    proto = onnx.load(str(report.path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    props = {p.key: p.value for p in proto.metadata_props}
    meta = ModelMetadata.from_onnx_props(props, str(report.path))
    stored = checkpoint_metadata(load_checkpoint(run.best_checkpoint))
    assert meta.task == stored.task == "T1w->T2w"
    assert meta.normalisation == stored.normalisation
    assert (meta.pad_multiple, meta.min_size) == (stored.pad_multiple, stored.min_size)
    assert meta.architecture == stored.architecture
    assert meta.training["seed"] == 0 and meta.training["epochs"] == run.best_epoch
    assert meta.training["best_epoch"] == run.best_epoch
    assert meta.training["validation"]["model"] == pytest.approx(run.best_metrics)
    assert meta.training["validation"]["lut_baseline"] == pytest.approx(run.baseline_metrics)
    assert "CC BY 4.0" in meta.weights_license and meta.package_version
    # The training data is named, never given as a local path, and summarised for the
    # run-time "unlike the training data" check.
    assert meta.training["data"].startswith("tiny_cohort")  # its folder: it has no Name
    assert "/" not in json.dumps(meta.training)
    summary = meta.training_summary
    assert summary["dataset"] == meta.training["data"]
    assert summary["subjects"] == meta.training["subjects"]["train"]
    assert len(summary["contrasts"]["T1w"]["histogram"]) == 50
    assert summary["voxel_size_mm"][0] > 0
    # onnxruntime exposes the same properties to the runtime.
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == props


def test_export_parity_and_dynamic_axes(exported):
    run, report = exported
    assert report.max_abs_diff <= 1e-4 and report.tolerance == 1e-4
    model, _ = model_from_checkpoint(run.best_checkpoint)
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (3, 1, 48, 64)).astype(np.float32)
    got = session.run(None, {"sources": x})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1, 48, 64)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_resize_upsampling_trains_from_the_cli_and_exports(tmp_path_factory, tmp_path):
    """`mri2mri-train --upsample resize` (nearest x2 + 3x3 conv, no checkerboard) is stored
    with the run and exported as ONNX Resize + Conv, matching PyTorch."""
    from mri2mri.train import cli_train

    def args(out, upsample):
        given = ["--data", str(tiny_cohort_dir(tmp_path_factory)), "--source", "T1w",
                 "--target", "T2w", "--out", str(out), "--upsample", upsample]
        for key, value in TINY.items():
            given += [f"--{key.replace('_', '-')}", str(value)]
        return given

    out = tmp_path / "run"
    result = CliRunner().invoke(cli_train.app, args(out, "resize"))
    assert result.exit_code == 0, result.output
    report = export_checkpoint(out / "best.pt", tmp_path / "resize.onnx")
    assert report.max_abs_diff <= 1e-4
    ops = {node.op_type for node in onnx.load(str(report.path)).graph.node}
    assert "Resize" in ops and "ConvTranspose" not in ops
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    meta = ModelMetadata.from_onnx_props(props, str(report.path))
    assert meta.architecture["upsample"] == "resize"
    bad = CliRunner().invoke(cli_train.app, args(tmp_path / "bad", "bicubic"))
    assert isinstance(bad.exception, InputError)
    assert "upsample must be one of" in str(bad.exception)


def test_fp16_export(exported, tmp_path):
    run, _ = exported
    report = export_checkpoint(run.best_checkpoint, tmp_path / "half.onnx", fp16=True)
    assert report.tolerance == onnx_export.TOLERANCE_FP16 and report.max_abs_diff <= 1e-2
    assert report.check_on == "cpu"
    proto = onnx.load(str(report.path))
    assert all(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # onnxruntime's converter (keep_io_types): its Casts at the graph's input and output.
    casts = [n.name for n in proto.graph.node if n.op_type == "Cast"]
    assert any(c.startswith("graph_input_cast") for c in casts)
    assert any(c.startswith("graph_output_cast") for c in casts)
    # The runtime runs it on the CPU: float32 out, within the fp16 tolerance of fp32.
    full = ort.InferenceSession(str(exported[1].path), providers=["CPUExecutionProvider"])
    half = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).uniform(-1, 1, (2, 1, 48, 64)).astype(np.float32)
    got = half.run(None, {"sources": x})[0]
    assert got.dtype == np.float32
    assert np.max(np.abs(got - full.run(None, {"sources": x})[0])) <= onnx_export.TOLERANCE_FP16


def test_check_on_cuda_checks_on_the_gpu_or_says_why_not(exported, tmp_path):
    run, _ = exported
    out = tmp_path / "gpu.onnx"
    try:
        report = export_checkpoint(run.best_checkpoint, out, check_on="cuda")
    except InputError as exc:  # no working CUDA here: the cause, and no file
        from mri2mri.runtime.engine import providers

        assert str(exc) == (f"--check-on cuda: CUDA did not start "
                            f"({providers._BROKEN[providers.CUDA]}); use --check-on cpu")
        assert not out.exists() and list(tmp_path.iterdir()) == []
    else:
        assert report.check_on == "cuda" and report.max_abs_diff <= report.tolerance


def test_parity_failure_leaves_no_file(exported, tmp_path, monkeypatch):
    run, _ = exported
    monkeypatch.setattr(onnx_export, "TOLERANCE_FP32", -1.0)
    out = tmp_path / "bad.onnx"
    with pytest.raises(InputError, match="differs from PyTorch"):
        export_checkpoint(run.best_checkpoint, out)
    assert list(tmp_path.iterdir()) == []


def test_bad_checkpoints_are_clear_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    for path, message in [(garbage, "not a readable PyTorch checkpoint"),
                          (foreign, "not an mri2mri checkpoint"),
                          (tmp_path / "missing.pt", "not found")]:
        with pytest.raises(InputError, match=message) as info:
            export_checkpoint(path, tmp_path / "out.onnx")
        assert str(path) in str(info.value)
    assert not (tmp_path / "out.onnx").exists()


def test_truncated_checkpoint(exported, tmp_path):
    run, _ = exported
    data = run.best_checkpoint.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(cut)
    broken = tmp_path / "broken.pt"
    state = load_checkpoint(run.best_checkpoint)
    state["model_state"] = {k: v.reshape(-1)[:1] if v.ndim else v
                            for k, v in state["model_state"].items()}
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")},
                    broken)
    with pytest.raises(InputError, match="do not match"):
        export_checkpoint(broken, tmp_path / "x.onnx")


def test_export_cli(exported, tmp_path):
    run, _ = exported
    out = tmp_path / "cli.onnx"
    result = CliRunner().invoke(export_cli.app, [str(run.best_checkpoint), "--out", str(out),
                                                 "--opset", "18"])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and out.exists()
    assert onnx.load(str(out)).opset_import[0].version == 18
    again = CliRunner().invoke(export_cli.app, [str(run.best_checkpoint), "--out", str(out)])
    assert again.exit_code != 0 and "exists" in str(again.exception)
    old = CliRunner().invoke(export_cli.app, [str(run.best_checkpoint), "--out",
                                              str(tmp_path / "o.onnx"), "--opset", "13"])
    assert old.exit_code != 0 and not (tmp_path / "o.onnx").exists()
