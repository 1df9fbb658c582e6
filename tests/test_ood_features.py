"""The feature out-of-distribution check: bottleneck statistics against the training subjects'
(definition, ONNX second output, reference from training, mri2mri-run's verdict)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from onnx_fixtures import (
    channel_picker,
    collect_sessions,  # noqa: F401 - autouse: frees sessions
    nifti,
    stand_in,
    volume,
)
from test_bad_inputs import run_cli

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.session import SliceRunner, session_options
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry, stack_context
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis import features
from mri2mri.runtime.synthesis.batch import synthesize_dataset
from mri2mri.runtime.synthesis.disagreement import checked_slices
from mri2mri.runtime.synthesis.ood_checks import OodChecks, warnings_of
from mri2mri.runtime.synthesis.synthesizer import Synthesizer

WARNING = "the network's features are unlike its training subjects' (figure "
POOL = 4  # the stand-in's "bottleneck": 4 x 4 average pooling of the input


def pooler(path: Path, ood: dict | None = None, batch: int | str = "N",
           feature_name: str = features.OUTPUT_NAME) -> Path:
    """A T1w->T2w stand-in: output = input, second output = its 4 x 4 block means."""
    nodes = [helper.make_node("Identity", ["x"], ["y"]),
             helper.make_node("AveragePool", ["x"], [feature_name], kernel_shape=[POOL, POOL],
                              strides=[POOL, POOL])]
    return stand_in(path, nodes, [("y", ("H", "W")), (feature_name, ("h", "w"))], ood=ood,
                    batch=batch)


def block_means(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // POOL, POOL, w // POOL, POOL).mean(axis=(3, 5))


def pooled_reference(seed: int = 0, threshold: float | None = None) -> dict:
    """A reference for the one-channel stand-in, from made-up subjects."""
    rng = np.random.default_rng(seed)
    record = features.reference([rng.normal(-0.2, 0.1, (8, 1)) for _ in range(4)])
    return record if threshold is None else {**record, "threshold": threshold}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("features")
    return {"old": channel_picker(d / "old.onnx", ["T1w"], "T2w"),
            "plain": pooler(d / "plain.onnx"),
            "fixed": pooler(d / "fixed.onnx", batch=4),
            "judged": pooler(d / "judged.onnx", {features.KEY: pooled_reference()}),
            "flagging": pooler(d / "flagging.onnx",
                               {features.KEY: pooled_reference(threshold=1e-6)})}


@pytest.fixture(scope="module")
def t1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("features_input") / "sub_T1w.nii.gz"
    nib.save(nifti(volume((20, 23, 24))), path)
    return path


# ---- the definition ------------------------------------------------------------------------

def test_measure_averages_the_mask_over_blocks_and_drops_empty_slices() -> None:
    maps = np.arange(3 * 2 * 2 * 3, dtype=np.float64).reshape(3, 2, 2, 3)
    mask = np.zeros((3, 4, 6), bool)
    mask[0, 0:2, 0:2] = True  # cell (0, 0): all four pixels
    mask[0, 2, 4:6] = True  # cell (1, 2): two of four pixels, not more than half
    mask[2, 2:4, 2:4] = True
    mask[2, 2, 2] = False  # cell (1, 1): three of four
    got = features.measure(maps, mask)  # slice 1 has no foreground: dropped
    np.testing.assert_allclose(got, [maps[0, :, 0, 0], maps[2, :, 1, 1]])
    assert features.measure(maps, np.zeros_like(mask)).shape == (0, 2)
    with pytest.raises(ValueError, match="do not tile"):
        features.measure(maps, mask[:, :, :5])


def test_reference_figures_and_threshold() -> None:
    rng = np.random.default_rng(1)
    subjects = [rng.normal(i * 0.1, 1.0, (6, 5)) for i in range(4)] + [np.zeros((0, 5))]
    record = features.reference(subjects, drawn_from={"train": 3, "validation": 2})
    kept = subjects[:4]
    every = np.concatenate(kept)
    np.testing.assert_allclose(record["mean"], every.mean(0), rtol=1e-5)
    np.testing.assert_allclose(record["sd"], every.std(0), rtol=1e-5)
    for i, value in enumerate(record["leave_one_out"]):
        others = np.concatenate(kept[:i] + kept[i + 1:])
        expected = np.mean(np.abs(kept[i].mean(0) - others.mean(0)) / others.std(0))
        assert value == pytest.approx(expected, rel=1e-5)
    assert record["threshold"] == pytest.approx(
        features.THRESHOLD_MULTIPLE * max(record["leave_one_out"]), rel=1e-5)
    assert (record["subjects"], record["reference_slices"], record["channels"]) == (4, 24, 5)
    assert record["drawn_from"] == {"train": 3, "validation": 2}
    assert record["version"] == features.DEFINITION_VERSION
    # Small and JSON-able: it travels in the ONNX metadata.
    meta = ModelMetadata(sources=["T1w"], target="T2w", ood={features.KEY: record})
    assert ModelMetadata.from_onnx_props(meta.to_onnx_props()).ood[features.KEY] == record
    with pytest.raises(ValueError, match="at least two subjects"):
        features.reference(subjects[:1])


def test_a_dead_channel_cannot_dominate_the_figure() -> None:
    rng = np.random.default_rng(2)
    subjects = [np.column_stack([rng.normal(0, 1, 8), np.full(8, 3.0)]) for _ in range(3)]
    record = features.reference(subjects)
    floor = features.SD_FLOOR * np.median([record["sd"][0], 0.0])  # the median channel sd
    assert record["sd"][1] == pytest.approx(floor, rel=1e-5)
    # fp16-sized noise on the constant channel moves the figure by about 0.01, where a
    # 1e-6 floor (the prototype's) would move it by 50.
    scan = subjects[0] + [0.0, 1e-4]
    shift = features.figure(scan, record["mean"], record["sd"]) - \
        features.figure(subjects[0], record["mean"], record["sd"])
    assert abs(shift) < 0.05


def test_judge_flags_above_the_threshold_and_says_why_it_did_not_judge() -> None:
    record = pooled_reference()
    ood = {features.KEY: record}
    usual = np.full((5, 1), record["mean"][0])
    odd = usual + 10 * record["sd"][0]
    ok, bad = features.judge(usual, ood), features.judge(odd, ood)
    assert ok.checked and not ok.flagged and ok.figure == pytest.approx(0.0, abs=1e-6)
    assert bad.flagged and bad.figure == pytest.approx(10.0, rel=1e-4)
    assert bad.reference_max == max(record["leave_one_out"]) and bad.slices == 5
    assert bad.message.startswith(WARNING) and "<= threshold" in ok.message
    for scan, recorded, says in (
            (None, ood, "no feature output"), (usual[:0], ood, "no foreground slices"),
            (usual, {}, "no reference recorded"),
            (usual, {features.KEY: {**record, "version": 0}}, "another definition"),
            (np.zeros((5, 3)), ood, "1 channels, the network 3")):
        verdict = features.judge(scan, recorded)
        assert not verdict.checked and not verdict.flagged and says in verdict.message
        assert verdict.as_dict()["checked"] is False


# ---- the runtime ---------------------------------------------------------------------------

def test_slice_runner_fetches_feature_maps_of_the_asked_slices_only(models) -> None:
    x = np.random.default_rng(3).uniform(-1, 1, (7, 1, 8, 12)).astype(np.float32)
    for name, batch in (("plain", 3), ("fixed", 2)):  # "fixed": batch 4, short last batch
        session = ort.InferenceSession(str(models[name]), session_options(1),
                                       providers=["CPUExecutionProvider"])
        runner = SliceRunner(session, "CPUExecutionProvider", batch)
        out, maps = runner.run_collecting(x, [6, 0, 3, 4])
        np.testing.assert_array_equal(out, x)
        np.testing.assert_allclose(maps, block_means(x)[[6, 0, 3, 4]], atol=1e-6)
        assert runner.run_collecting(x, [])[1] is None
        np.testing.assert_array_equal(runner.run(x), x)
    old = ort.InferenceSession(str(models["old"]), providers=["CPUExecutionProvider"])
    assert SliceRunner(old, "CPUExecutionProvider").run_collecting(x, [0])[1] is None


def test_synthesis_figure_equals_an_independent_measure(models, t1, tmp_path) -> None:
    synth = Synthesizer(models["judged"], device="cpu")
    checks = OodChecks(synth.meta)
    synth.synthesize_file([t1], tmp_path / "out.nii.gz", **checks.hooks)
    found = checks.as_dict()[features.KEY]
    prepared = prepare_sources([nib.load(t1)], SliceGeometry(8), Normalisation(), names=["T1w"])
    mask, zs = checked_slices(prepared)
    scan = features.measure(block_means(stack_context(prepared.slices, 0)[zs]), mask[zs])
    record = synth.meta.ood[features.KEY]
    assert found["checked"] and found["slices"] == len(scan) > 0
    assert found["figure"] == pytest.approx(features.figure(scan, record["mean"], record["sd"]),
                                            rel=1e-5)
    assert found["threshold"] == record["threshold"]


def test_a_one_output_model_runs_with_the_check_not_measured(models, t1, tmp_path, capsys):
    synth = Synthesizer(models["old"], device="cpu")
    checks = OodChecks(synth.meta)
    synth.synthesize_file([t1], tmp_path / "out.nii.gz", **checks.hooks)
    record = checks.as_dict()
    assert record["disagreement"]["figure"] is not None  # the other check still runs
    assert not record[features.KEY]["checked"] and record[features.KEY]["figure"] is None
    assert "no feature output" in record[features.KEY]["message"] and not checks.warnings()
    code, stdout, _ = run_cli(["--model", models["old"], "--input", t1, "--output",
                               tmp_path / "cli.nii.gz", "--device", "cpu", "--verbose"], capsys)
    assert code == 0 and "feature figure not measured (the model has no feature output" in stdout


def test_a_model_with_an_unknown_second_output_is_refused(tmp_path) -> None:
    with pytest.raises(InputError, match="optionally a second, 'features'"):
        Synthesizer(pooler(tmp_path / "odd.onnx", feature_name="logits"), device="cpu")


def test_warning_sidecar_report_and_switch(models, t1, tmp_path, capsys) -> None:
    out = tmp_path / "out.nii.gz"
    base = ["--model", models["flagging"], "--input", t1, "--output", out, "--device", "cpu",
            "--overwrite"]
    code, _, err = run_cli(base, capsys)
    assert code == 0 and f"warning: {t1}: {WARNING}" in err
    code, stdout, err = run_cli([*base, "--no-ood-check", "--verbose"], capsys)
    assert code == 0 and WARNING not in err
    assert "feature figure not measured (switched off (--no-ood-check))" in stdout
    raw = tmp_path / "raw"
    (raw / "sub-01" / "anat").mkdir(parents=True)
    (raw / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    (raw / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(t1.read_bytes())
    derived = tmp_path / "derived"
    summary = synthesize_dataset(models["flagging"], raw, derived, device="cpu")
    assert WARNING in summary.flagged["sub-01"]
    side = json.loads(next(derived.rglob("sub-01_desc-mri2mri_T2w.json")).read_text())
    ood = side["Mri2mri"]["OutOfDistribution"]
    found = ood[features.KEY]
    assert found["flagged"] and found["figure"] > found["threshold"] == pytest.approx(1e-6)
    assert any(WARNING in w for w in warnings_of(ood))
    page = html.unescape((derived / "sub-01.html").read_text())
    assert "Network features against the training subjects'" in page and WARNING in page
    assert "feature reference" in page  # the model card
    assert "<td>1</td></tr>" in (derived / "index.html").read_text()


# ---- a trained network: training, export, torch = ONNX -------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training run, its best.pt state and its ONNX export."""
    from test_train_cohort import tiny_run

    from mri2mri.export.onnx_export import export_checkpoint
    from mri2mri.train.checkpoint import load_checkpoint

    run = tiny_run(tmp_path_factory)
    report = export_checkpoint(run.best_checkpoint,
                               tmp_path_factory.mktemp("features_onnx") / "model.onnx")
    return run, load_checkpoint(run.best_checkpoint), report


def _cohort(run):
    from mri2mri.data.cohort import Cohort

    return Cohort.discover(json.loads((run.out_dir / "config.json").read_text())["data"])


def test_training_records_the_reference_and_export_keeps_it(trained) -> None:
    from mri2mri.train.checkpoint import checkpoint_metadata
    from mri2mri.train.feature_reference import reference_of_checkpoint

    run, state, report = trained
    record = checkpoint_metadata(state).ood[features.KEY]
    split = state["split"]
    assert record["drawn_from"] == {"train": len(split["train"]),
                                    "validation": len(split["validation"])}
    assert record["subjects"] == len(split["train"]) + len(split["validation"])
    assert record["channels"] == len(record["mean"]) == 256  # the small preset's bottleneck
    assert record["threshold"] == pytest.approx(max(record["leave_one_out"]), rel=1e-5)
    assert min(record["sd"]) > 0 and len(json.dumps(record)) < 20_000
    # From the checkpoint and the cohort's files (the runtime's preparation), after the
    # fact: the same numbers as the trainer's from its slice cache.
    again = reference_of_checkpoint(state)
    for key in ("mean", "sd", "leave_one_out"):
        np.testing.assert_allclose(again[key], record[key], rtol=1e-4, atol=1e-6)
    assert report.metadata.ood[features.KEY] == record
    assert report.feature_diff <= 1e-4
    outputs = [o.name for o in onnx.load(str(report.path)).graph.output]
    assert outputs == ["target", features.OUTPUT_NAME]


def test_add_feature_reference_writes_it_into_an_older_checkpoint(trained, tmp_path) -> None:
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
    from mri2mri.train.feature_reference import add_feature_reference

    _, state, _ = trained
    meta = checkpoint_metadata(state)
    recorded = meta.ood.pop(features.KEY)
    old = tmp_path / "old.pt"
    save_checkpoint({**state, "metadata": meta.to_json()}, old)
    made = add_feature_reference(old)
    assert checkpoint_metadata(load_checkpoint(old)).ood[features.KEY] == made
    np.testing.assert_allclose(made["mean"], recorded["mean"], rtol=1e-4, atol=1e-6)


def _torch_vectors(state, image: nib.Nifti1Image) -> np.ndarray:
    from mri2mri.train.feature_reference import prepared_vectors
    from mri2mri.train.inference import model_from_checkpoint

    model, meta = model_from_checkpoint(state)
    prepared = prepare_sources([image], meta.geometry, meta.normalisation)
    return prepared_vectors(model, prepared, meta.context)


def test_torch_features_equal_the_onnx_output(trained, tmp_path) -> None:
    from mri2mri.train.feature_reference import feature_maps
    from mri2mri.train.inference import model_from_checkpoint

    run, state, report = trained
    image = _cohort(run).subject(state["split"]["validation"][0]).load("T1w")
    model, meta = model_from_checkpoint(state)
    prepared = prepare_sources([image], meta.geometry, meta.normalisation)
    mask, zs = checked_slices(prepared)
    stacks = stack_context(prepared.slices, meta.context)[zs]
    session = ort.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    onnx_maps = session.run([features.OUTPUT_NAME], {"sources": stacks})[0]
    torch_maps = feature_maps(model, stacks)
    assert onnx_maps.shape == torch_maps.shape and onnx_maps.shape[1] == 256
    assert np.max(np.abs(onnx_maps - torch_maps)) <= 1e-4
    # mri2mri-run's figure (maps from its own synthesis pass) is the torch vectors' figure.
    synth = Synthesizer(report.path, device="cpu")
    checks = OodChecks(synth.meta)
    path = tmp_path / "t1.nii.gz"
    nib.save(image, path)
    synth.synthesize_file([path], tmp_path / "out.nii.gz", **checks.hooks)
    record = synth.meta.ood[features.KEY]
    expected = features.figure(_torch_vectors(state, image), record["mean"], record["sd"])
    found = checks.as_dict()[features.KEY]
    assert found["checked"] and found["figure"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_a_wrong_contrast_scores_above_the_models_own_subjects(trained) -> None:
    run, state, _ = trained
    record = state_record = json.loads(state["metadata"])["ood"][features.KEY]
    cohort = _cohort(run)
    subject = cohort.subject(state["split"]["validation"][0])
    own = features.judge(_torch_vectors(state, subject.load("T1w")), {features.KEY: record})
    wrong = features.judge(_torch_vectors(state, subject.load("T2w")), {features.KEY: record})
    assert wrong.figure > max(state_record["leave_one_out"]) and wrong.figure > own.figure
    assert wrong.flagged and not own.flagged
