"""The model-based out-of-distribution figure: the model's disagreement with itself under
small input changes, its reference from training, and mri2mri-run's check."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    stand_in,
    volume,
)
from test_bad_inputs import run_cli

from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry, stack_context
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis.batch import synthesize_dataset
from mri2mri.runtime.synthesis.disagreement import (
    FIGURE_SLICES,
    PERTURBATIONS,
    THRESHOLD_MULTIPLE,
    chosen_slices,
    judge,
    measure,
    measure_prepared,
    reference,
)
from mri2mri.runtime.synthesis.ood_checks import OodChecks
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

WARNING = "the model disagrees with itself under small input changes (figure "


def _save(nodes: list, inits: list, path: Path, ood: dict | None = None) -> Path:
    """A one-source T1w->T2w model of `nodes` (input ``x``, output ``y``) with metadata."""
    return stand_in(path, nodes, [("y", ("H", "W"))], inits, ood)


def slice_normaliser(path: Path) -> Path:
    """y = (x + 1) / max over the slice of (x + 1): pointwise up to a per-slice constant that
    a flip does not change, and the gain cancels (flip-equivariant, gain-invariant)."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    return _save([helper.make_node("Add", ["x", "one"], ["s"]),
                  helper.make_node("ReduceMax", ["s"], ["m"], axes=[2, 3], keepdims=1),
                  helper.make_node("Div", ["s", "m"], ["y"])], [one], path)


def shifter(path: Path, ood: dict | None = None) -> Path:
    """y = x moved by one pixel along the left-right axis: not flip-equivariant."""
    weight = np.zeros((1, 1, 3, 3), np.float32)
    weight[0, 0, 0, 1] = 1.0
    w = helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel().tolist())
    return _save([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1],
                                   kernel_shape=[3, 3])], [w], path, ood)


def predictor(path: Path):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {session.get_inputs()[0].name: x})[0]


def stacks_and_mask(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Network-like inputs: -1 background, a textured, off-centre foreground block."""
    rng = np.random.default_rng(seed)
    stacks = np.full((5, 1, 16, 24), -1.0, np.float32)
    mask = np.zeros((5, 16, 24), bool)
    mask[:, 2:11, 4:20] = True
    stacks[:, 0][mask] = rng.uniform(-0.5, 1.0, int(mask.sum()))
    return stacks, mask


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("disagreement")
    return {"identity": channel_picker(d / "identity.onnx", ["T1w"], "T2w"),
            "normaliser": slice_normaliser(d / "normaliser.onnx"),
            "shifter": shifter(d / "shifter.onnx"),
            "flagging": shifter(d / "flagging.onnx", {"disagreement": reference([1e-4])}),
            "lenient": shifter(d / "lenient.onnx", {"disagreement": reference([10.0])})}


@pytest.fixture(scope="module")
def t1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("disagreement_input") / "sub_T1w.nii.gz"
    nib.save(nifti(volume((20, 23, 24))), path)
    return path


def test_equivariant_invariant_model_scores_zero(models: dict[str, Path]) -> None:
    stacks, mask = stacks_and_mask()
    figure = measure(predictor(models["normaliser"]), stacks, mask)
    assert figure is not None and set(figure.perturbations) == {p.name for p in PERTURBATIONS}
    assert figure.value == pytest.approx(0.0, abs=1e-6)
    assert figure.slices == 5


def test_identity_model_has_the_closed_form_figure(models: dict[str, Path]) -> None:
    """Identity: a flip is undone exactly; gain g moves the output by (x + 1)(g - 1)."""
    stacks, mask = stacks_and_mask(1)
    figure = measure(predictor(models["identity"]), stacks, mask)
    rms = float(np.sqrt(np.mean((stacks[:, 0][mask].astype(np.float64) + 1) ** 2)))
    assert figure.perturbations["flip-lr"] == 0.0
    assert figure.perturbations["gain-1.05"] == pytest.approx(0.05 * rms, rel=1e-4)
    assert figure.perturbations["gain-0.95"] == pytest.approx(0.05 * rms, rel=1e-4)
    assert figure.value == pytest.approx(2 * 0.05 * rms / 3, rel=1e-4)


def test_flip_sensitive_model_is_positive_and_deterministic(models: dict[str, Path]) -> None:
    stacks, mask = stacks_and_mask(2)
    predict = predictor(models["shifter"])
    figure = measure(predict, stacks, mask)
    assert figure.perturbations["flip-lr"] > 0.05 and figure.value > 0
    assert measure(predict, stacks, mask) == figure
    # The known plain prediction gives the same figure as predicting it again.
    assert measure(predict, stacks, mask, plain=predict(stacks)) == figure
    assert measure(predict, stacks, np.zeros_like(mask)) is None


def test_chosen_slices_are_foreground_evenly_spaced_and_bounded() -> None:
    mask = np.zeros((100, 4, 4), bool)
    mask[10:90, 1, 1] = True
    chosen = chosen_slices(mask)
    assert len(chosen) == FIGURE_SLICES and chosen[0] == 10 and chosen[-1] == 89
    assert np.ptp(np.diff(chosen)) <= 1  # evenly spaced, up to rounding
    mask[:] = False
    mask[[3, 7], 0, 0] = True
    assert chosen_slices(mask).tolist() == [3, 7]


def test_synthesis_measures_what_the_network_is_given(models: dict[str, Path], t1: Path,
                                                      tmp_path: Path) -> None:
    """The run-time figure equals `measure` on the same subject prepared independently."""
    synth = Synthesizer(models["shifter"], device="cpu")
    checks = OodChecks(synth.meta)
    timings = synth.synthesize_file([t1], tmp_path / "out.nii.gz", **checks.hooks)
    record = checks.as_dict()["disagreement"]
    prepared = prepare_sources([nib.load(t1)], SliceGeometry(8), Normalisation(), names=["T1w"])
    expected = measure_prepared(predictor(models["shifter"]), prepared,
                                stack_context(prepared.slices, 0))
    assert expected.slices == FIGURE_SLICES
    assert record["figure"] == pytest.approx(expected.value, rel=1e-5)
    assert record["slices"] == FIGURE_SLICES and timings.ood_check > 0
    assert record["skipped"] == "no reference recorded in the model"
    assert not record["flagged"] and "not judged" in record["message"]


def test_metadata_round_trip_and_older_models() -> None:
    record = reference([0.01, 0.03, 0.02])
    assert record["threshold"] == pytest.approx(THRESHOLD_MULTIPLE * 0.03)
    meta = ModelMetadata(sources=["T1w"], target="T2w", ood={"disagreement": record})
    back = ModelMetadata.from_onnx_props(meta.to_onnx_props())
    assert back.ood == {"disagreement": record}
    old = json.loads(meta.to_json())
    del old["ood"]
    assert ModelMetadata.from_json(json.dumps(old)).ood == {}
    figure = measure(lambda x: x, *stacks_and_mask())
    assert judge(figure, {}).checked is False
    assert judge(figure, {}, threshold=1e-9).flagged
    stale = {"disagreement": {**record, "version": 0}}
    assert "another definition" in judge(figure, stale).message


def _cli(model: Path, t1: Path, out: Path, capsys: pytest.CaptureFixture[str],
         *extra: str) -> tuple[str, str]:
    code, stdout, err = run_cli(["--model", model, "--input", t1, "--output", out,
                                 "--device", "cpu", "--overwrite", *extra], capsys)
    assert code == 0, err
    return stdout, err


def test_warning_above_the_threshold_only(models: dict[str, Path], t1: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.nii.gz"
    _, err = _cli(models["flagging"], t1, out, capsys)
    assert f"warning: {t1}: {WARNING}" in err and "> threshold 0.0002)" in err
    stdout, err = _cli(models["lenient"], t1, out, capsys, "--verbose")
    assert "warning" not in err and "<= threshold 20" in stdout
    _, err = _cli(models["lenient"], t1, out, capsys, "--ood-threshold", "1e-6")
    assert WARNING in err
    stdout, err = _cli(models["flagging"], t1, out, capsys, "--no-ood-check", "--verbose")
    assert "warning" not in err and "switched off (--no-ood-check)" in stdout
    code, _, err = run_cli(["--model", models["lenient"], "--input", t1, "--output", out,
                            "--ood-threshold", "0"], capsys)
    assert code != 0 and "--ood-threshold must be above 0" in err


def test_dataset_sidecar_and_report_record_the_figure(models: dict[str, Path], t1: Path,
                                                      tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(t1.read_bytes())
    out = tmp_path / "out"
    summary = synthesize_dataset(models["flagging"], raw, out, device="cpu")
    assert list(summary.flagged) == ["sub-01"] and WARNING in summary.flagged["sub-01"]
    side = json.loads(next(out.rglob("sub-01_desc-mri2mri_T2w.json")).read_text())
    found = side["Mri2mri"]["OutOfDistribution"]["disagreement"]
    assert found["flagged"] and found["figure"] > found["threshold"] == pytest.approx(2e-4)
    assert found["validation_max"] == pytest.approx(1e-4)
    page = (out / "sub-01.html").read_text()
    assert "Model disagreement under small input changes" in page and WARNING in page
    assert "<td>1</td></tr>" in (out / "index.html").read_text()


def test_training_records_the_reference_that_the_runtime_reproduces(tmp_path_factory) -> None:
    """best.pt carries one figure per validation subject; the runtime's definition, applied
    to the same subject and weights, gives the same numbers; export keeps them."""
    from test_train_cohort import tiny_run

    from mri2mri.data.cohort import Cohort
    from mri2mri.export.onnx_export import export_metadata
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint
    from mri2mri.train.inference import model_from_checkpoint, predict_slices

    result = tiny_run(tmp_path_factory)
    state = load_checkpoint(result.best_checkpoint)
    record = checkpoint_metadata(state).ood["disagreement"]
    assert len(record["validation"]) == len(state["split"]["validation"])
    assert record["threshold"] == pytest.approx(THRESHOLD_MULTIPLE * max(record["validation"]),
                                                rel=1e-5)
    model, meta = model_from_checkpoint(state)
    cohort = Cohort.discover(json.loads((result.out_dir / "config.json").read_text())["data"])
    for sid, stored in zip(state["split"]["validation"], record["validation"], strict=True):
        prepared = prepare_sources([cohort.subject(sid).load("T1w")], meta.geometry,
                                   meta.normalisation)
        figure = measure_prepared(lambda s: predict_slices(model, s), prepared,
                                  stack_context(prepared.slices, meta.context))
        assert stored > 0 and figure.value == pytest.approx(stored, rel=1e-4, abs=1e-6)
    exported = export_metadata(state, result.best_checkpoint, 17, fp16=False)
    assert exported.ood["disagreement"] == record
