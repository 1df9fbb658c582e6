"""The contrast figure and the references made from augmented draws (feature figure version 2,
the histogram threshold's calibration): definitions, and on a tiny trained network that a
wrong contrast warns and a held-out or contrast-randomised subject does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx_fixtures import collect_sessions  # noqa: F401 - autouse: frees sessions

from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.runtime.synthesis import contrast, features, ood
from mri2mri.runtime.synthesis.ood_checks import warnings_of


def _groups(rng: np.random.Generator, shift: float, subjects: int = 4, scans: int = 3):
    """Per subject, `scans` scans of 6 slices x 5 channels around `shift` on channel 0."""
    return [[rng.normal(0, 1, (6, 5)) + np.array([shift, 0, 0, 0, 0]) for _ in range(scans)]
            for _ in range(subjects)]


def test_direction_puts_the_groups_at_0_and_1() -> None:
    rng = np.random.default_rng(0)
    right, wrong = _groups(rng, 3.0), _groups(rng, -3.0)
    direction = contrast.fit([s for g in right for s in g], [s for g in wrong for s in g])
    mean_right = np.mean([direction.figure(s) for g in right for s in g])
    mean_wrong = np.mean([direction.figure(s) for g in wrong for s in g])
    assert mean_right == pytest.approx(0.0, abs=1e-9) and mean_wrong == pytest.approx(1.0)
    # The direction is the channel that differs.
    assert np.argmax(np.abs(direction.weights)) == 0
    with pytest.raises(ValueError, match="at least two scans"):
        contrast.fit(right[0][:1], wrong[0])


def test_reference_leave_one_out_threshold_and_metadata_round_trip() -> None:
    rng = np.random.default_rng(1)
    right, wrong = _groups(rng, 3.0), _groups(rng, -3.0)
    record = contrast.reference(right, wrong, wrong="T2w", draws=2)
    assert record["version"] == contrast.DEFINITION_VERSION and record["wrong"] == "T2w"
    assert record["threshold"] == contrast.THRESHOLD == 0.5
    assert record["scans"] == {"right": 12, "wrong": 12} and record["subjects"] == 4
    loo = record["leave_one_out"]
    assert max(loo["right"]) < 0.5 < min(loo["wrong"])
    meta = ModelMetadata(sources=["T1w"], target="T2w", ood={contrast.KEY: record})
    assert ModelMetadata.from_onnx_props(meta.to_onnx_props()).ood[contrast.KEY] == record
    with pytest.raises(ValueError, match="three subjects"):
        contrast.reference(right[:2], wrong[:2])


def test_judge_flags_the_wrong_side_and_says_why_it_did_not_judge() -> None:
    rng = np.random.default_rng(2)
    right, wrong = _groups(rng, 3.0), _groups(rng, -3.0)
    recorded = {contrast.KEY: contrast.reference(right, wrong, wrong="T2w")}
    own = contrast.judge(rng.normal(0, 1, (6, 5)) + [3, 0, 0, 0, 0], recorded)
    other = contrast.judge(rng.normal(0, 1, (6, 5)) + [-3, 0, 0, 0, 0], recorded)
    assert own.checked and not own.flagged and own.figure < 0.5
    assert other.flagged and other.figure > 0.5 and other.wrong == "T2w"
    assert "takes the input for another contrast" in other.message
    assert contrast.judge(None, recorded).skipped.startswith("the model has no feature output")
    assert contrast.judge(np.zeros((3, 5)), {}).skipped == "no reference recorded in the model"
    old = {contrast.KEY: {**recorded[contrast.KEY], "version": 0}}
    assert "another definition" in contrast.judge(np.zeros((3, 5)), old).skipped
    assert "channels" in contrast.judge(np.zeros((3, 4)), recorded).skipped
    record = {contrast.KEY: other.as_dict()}
    assert warnings_of(record) == [other.message]


def test_feature_reference_takes_draws_per_subject() -> None:
    rng = np.random.default_rng(3)
    subjects = _groups(rng, 0.0, subjects=3, scans=2)
    record = features.reference(subjects)
    assert record["version"] == features.DEFINITION_VERSION == 2
    assert (record["subjects"], record["scans"]) == (3, 6)
    assert len(record["leave_one_out"]) == 6
    # Each scan against the other subjects' scans (its own subject's draws left out).
    others = np.concatenate([s for g in subjects[1:] for s in g])
    mean, sd = features.spread(others)
    assert record["leave_one_out"][1] == pytest.approx(
        features.figure(subjects[0][1], mean, sd), rel=1e-5)


def test_histogram_calibration_never_goes_below_the_default() -> None:
    tight = ood.calibration([0.1, 0.2])
    distances = [0.2 + 0.01 * i for i in range(31)]  # 0.20-0.50: 90th percentile 0.47
    wide = ood.calibration(distances, draws=6)
    assert tight["threshold"] == ood.DISTANCE_THRESHOLD
    assert wide["threshold"] == pytest.approx(0.47) and wide["distance_max"] == 0.5
    assert ood.recorded_threshold({ood.KEY: wide}) == pytest.approx(0.47)
    assert ood.recorded_threshold({}) == ood.DISTANCE_THRESHOLD
    assert ood.recorded_threshold({ood.KEY: {**wide, "version": 0}}) == ood.DISTANCE_THRESHOLD


# ---- a trained network ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training run with contrast randomisation, and its best.pt state."""
    from test_train_cohort import TINY, tiny_cohort_dir

    from mri2mri.train.checkpoint import load_checkpoint
    from mri2mri.train.config import TrainConfig
    from mri2mri.train.trainer import train

    out = tmp_path_factory.mktemp("contrast_run") / "run"
    run = train(TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"],
                            target="T2w", out=str(out), augment="strong,randomize=0.7",
                            **TINY))
    return run, load_checkpoint(run.best_checkpoint)


def _vectors(state, image):
    from mri2mri.runtime.imaging.preprocess import prepare_sources
    from mri2mri.train.feature_reference import prepared_vectors
    from mri2mri.train.inference import model_from_checkpoint

    model, meta = model_from_checkpoint(state)
    return prepared_vectors(model, prepare_sources([image], meta.geometry, meta.normalisation),
                            meta.context)


def test_training_records_all_three_references_from_augmented_draws(trained) -> None:
    from mri2mri.train.checkpoint import checkpoint_metadata
    from mri2mri.train.feature_reference import ood_references_of_checkpoint
    from mri2mri.train.ood_reference import DRAWS

    _, state = trained
    recorded = checkpoint_metadata(state).ood
    n = len(state["split"]["train"]) + len(state["split"]["validation"])
    assert recorded[features.KEY]["scans"] == n * (DRAWS + 1)
    assert recorded[features.KEY]["augment"].startswith("flip=0.5")
    assert recorded[contrast.KEY]["wrong"] == "T2w"
    assert recorded[contrast.KEY]["scans"] == {"right": n * (DRAWS + 1),
                                               "wrong": n * (DRAWS + 1)}
    assert recorded[ood.KEY]["scans"] == n * (DRAWS + 1)
    assert recorded[ood.KEY]["threshold"] >= ood.DISTANCE_THRESHOLD
    assert len(json.dumps(recorded)) < 40_000
    # After the fact, from the checkpoint and its cohort's files: the same records.
    again = ood_references_of_checkpoint(state)
    np.testing.assert_allclose(again[contrast.KEY]["weights"],
                               recorded[contrast.KEY]["weights"], rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(again[features.KEY]["mean"], recorded[features.KEY]["mean"],
                               rtol=1e-4, atol=1e-6)


def test_a_wrong_contrast_warns_and_held_out_or_randomised_subjects_do_not(trained) -> None:
    from test_ood_features import _cohort

    from mri2mri.train.augment import _remap, random_monotone_curve

    run, state = trained
    recorded = json.loads(state["metadata"])["ood"]
    subject = _cohort(run).subject(state["split"]["test"][0])
    t1, t2 = subject.load("T1w"), subject.load("T2w")
    data = np.asarray(t1.dataobj, dtype=np.float64)
    curve = random_monotone_curve(np.random.default_rng(5))
    remapped = _remap(data / np.percentile(data, 99.5), curve) * 1000.0
    randomised = type(t1)(remapped.astype(np.float32), t1.affine)
    verdicts = {name: contrast.judge(_vectors(state, image), recorded)
                for name, image in (("held-out", t1), ("randomised", randomised),
                                    ("T2w as T1w", t2))}
    assert all(v.checked for v in verdicts.values())
    assert not verdicts["held-out"].flagged and not verdicts["randomised"].flagged
    assert verdicts["T2w as T1w"].flagged


def test_export_with_ood_reference_remakes_the_records_and_leaves_the_checkpoint(
        trained, tmp_path) -> None:
    from typer.testing import CliRunner

    from mri2mri.export.cli import app
    from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint

    _, state = trained
    meta = checkpoint_metadata(state)
    recorded = dict(meta.ood)
    meta.ood = {k: v for k, v in meta.ood.items() if k not in (contrast.KEY, ood.KEY)}
    meta.ood[features.KEY] = {**meta.ood[features.KEY], "version": 1}  # an older reference
    old = tmp_path / "best.pt"
    save_checkpoint({**state, "metadata": meta.to_json()}, old)
    before = old.read_bytes()
    out = tmp_path / "model.onnx"
    done = CliRunner().invoke(app, [str(old), "--out", str(out), "--ood-reference"])
    assert done.exit_code == 0, done.output
    assert "contrast figure (0 source, 1 T2w given as source" in done.output
    assert old.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt", "model.onnx"]
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

    exported = Synthesizer(out, device="cpu").meta.ood
    assert exported[features.KEY]["version"] == features.DEFINITION_VERSION
    for key in (contrast.KEY, ood.KEY):
        assert exported[key] == recorded[key]
    assert checkpoint_metadata(load_checkpoint(old)).ood[features.KEY]["version"] == 1
