"""Training with augmentation, 2.5D context and early stopping (issue 16)."""

from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest
from cli_helpers import exit_code
from test_train_cohort import TINY, assert_resume_matches, tiny_cohort_dir
from typer.testing import CliRunner

from mri2mri.data.cohort import Cohort
from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.synthesis.cli_run import app as run_cli
from mri2mri.runtime.synthesis.synthesizer import Synthesizer
from mri2mri.train import cli_train
from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint
from mri2mri.train.config import TrainConfig
from mri2mri.train.inference import model_from_checkpoint, predict_slices
from mri2mri.train.trainer import train
from mri2mri.train.validation import SubsetValidation

AUGMENTED = {**TINY, "augment": "strong,randomize=0.5", "context": 1}
_RUNS: dict[str, object] = {}


def _context_run(tmp_path_factory):
    """A finished tiny run with augmentation and --context 1 (trained once per session)."""
    if "ctx" not in _RUNS:
        out = tmp_path_factory.mktemp("ctx") / "run"
        _RUNS["ctx"] = train(TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)),
                                         sources=["T1w"], target="T2w", out=str(out),
                                         **AUGMENTED))
    return _RUNS["ctx"]


def test_augmented_context_run_records_its_recipe(tmp_path_factory):
    run = _context_run(tmp_path_factory)
    state = load_checkpoint(run.best_checkpoint)
    meta = checkpoint_metadata(state)
    assert meta.context == 1 and meta.input_channels == 3
    assert state["model_config"]["in_channels"] == 3
    assert state["parity_slices"].shape[1] == 3
    assert meta.training["augment"]["randomize"] == 0.5
    assert meta.training["augment"]["rotate"] == 10  # from the strong preset
    assert state["train_config"]["augment"] == "flip=0.5,rotate=10,scale=0.1,translate=0.05," \
        "gamma=0.3,contrast=0.3,bias=0.3,noise=0.05,lowres=2,randomize=0.5"


def test_resume_with_augmentation_gives_the_same_weights(tmp_path_factory, tmp_path):
    reference = _context_run(tmp_path_factory)
    base = dict(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"], target="T2w",
                out=str(tmp_path / "interrupted"), **AUGMENTED)
    assert_resume_matches(reference, base)
    with pytest.raises(InputError, match="augment"):
        train(TrainConfig(**{**base, "augment": "light"}), resume=True)


def test_context_model_runs_the_same_in_onnx_and_pytorch(tmp_path_factory, tmp_path):
    run = _context_run(tmp_path_factory)
    model_path = export_checkpoint(run.best_checkpoint, tmp_path / "ctx.onnx").path
    subject = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[-1]
    out = tmp_path / "synth.nii.gz"
    assert exit_code(run_cli, ["--model", str(model_path), "--input",
                               f"T1w={subject.path('T1w')}", "--output", str(out),
                               "--device", "cpu"]) == 0
    synthesizer = Synthesizer(model_path, device="cpu")
    meta = synthesizer.meta
    assert meta.context == 1
    source = subject.load("T1w")
    prepared = prepare_sources([source], meta.geometry, meta.normalisation, names=["T1w"])
    stacks = stack_context(prepared.slices, 1)
    torch_out = predict_slices(model_from_checkpoint(run.best_checkpoint)[0], stacks)
    assert np.abs(synthesizer.runner.run(stacks) - torch_out).max() <= 1e-4
    from mri2mri.train.inference import synthesize_with_checkpoint

    reference = synthesize_with_checkpoint(run.best_checkpoint, [source])
    diff = np.abs(np.asarray(nib.load(str(out)).dataobj) - np.asarray(reference.dataobj)).max()
    assert diff <= 1e-4 * meta.normalisation.target_scale


def test_early_stopping_on_the_validation_metric(tmp_path_factory, tmp_path, monkeypatch):
    """Validation PSNR that only falls after epoch 1 stops a patience-2 run after epoch 3."""
    real_evaluate = SubsetValidation.evaluate
    calls = []

    def falling(self, predict, device, *args, **kwargs):
        scores = real_evaluate(self, predict, device, *args, **kwargs)
        calls.append(1)
        return {**scores, "psnr": 40.0 - len(calls)}  # one call per epoch

    monkeypatch.setattr(SubsetValidation, "evaluate", falling)
    config = dict(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"], target="T2w",
                  out=str(tmp_path / "es"), **{**TINY, "epochs": 6}, patience=2)
    result = train(TrainConfig(**config))
    assert result.stopped_early and result.best_epoch == 1 and len(result.history) == 3
    rows = list(csv.DictReader((tmp_path / "es" / "metrics.csv").open()))
    assert [r["early_stop"] for r in rows] == ["0", "0", "1"]
    assert [r["epochs_without_improvement"] for r in rows] == ["0", "1", "2"]
    assert all(r["best_epoch"] == "1" for r in rows)
    # Epoch 1 was not scored on whole volumes during the run: it is at the end, into the
    # metrics and best.pt's metadata.
    validation = checkpoint_metadata(load_checkpoint(result.best_checkpoint)).training[
        "validation"]
    assert validation["scope"] == "volumes" and rows[0]["full_val_psnr"]
    assert float(rows[0]["full_val_psnr"]) == pytest.approx(validation["model"]["psnr"])
    assert load_checkpoint(result.last_checkpoint)["best"]["metrics"] == validation["model"]
    again = train(TrainConfig(**config), resume=True)  # a stopped run stays stopped
    assert again.stopped_early and len(again.history) == 3


def test_cli_options_and_bad_values(tmp_path_factory, tmp_path):
    data = tiny_cohort_dir(tmp_path_factory)
    args = ["--data", str(data), "--source", "T1w", "--target", "T2w", "--out",
            str(tmp_path / "r"), "--epochs", "1", "--slices-per-epoch", "4", "--batch-size", "4",
            "--threads", "1", "--device", "cpu"]
    bad = CliRunner().invoke(cli_train.app, args + ["--augment", "strong,spin=3"])
    assert bad.exit_code != 0 and "unknown option 'spin'" in str(bad.exception)
    assert not (tmp_path / "r").exists()
    ok = CliRunner().invoke(cli_train.app, args + ["--augment", "light,noise=0", "--context",
                                                   "1", "--patience", "3"])
    assert ok.exit_code == 0, ok.output
    stored = load_checkpoint(tmp_path / "r" / "last.pt")["train_config"]
    assert stored["context"] == 1 and stored["patience"] == 3
    assert "noise" not in stored["augment"] and "flip=0.5" in stored["augment"]
    with pytest.raises(ValueError, match="context must be at least 0"):
        TrainConfig(data="d", sources=["T1w"], target="T2w", out="o", context=-1)
