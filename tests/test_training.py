"""Training: run outputs, checkpoint contents, exact resume, baseline, CLI, cross-grid tasks."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import numpy as np
import pytest
from test_train_cohort import TINY, assert_resume_matches, tiny_cohort_dir, tiny_run
from typer.testing import CliRunner

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import prepare_sources, prepare_target
from mri2mri.train import cli_train
from mri2mri.train.baseline import IntensityLUT
from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint
from mri2mri.train.config import TrainConfig
from mri2mri.train.inference import synthesize_with_checkpoint
from mri2mri.train.trainer import BestEpoch, train


def test_run_writes_outputs_and_self_describing_checkpoint(tmp_path_factory):
    result = tiny_run(tmp_path_factory)
    out = result.out_dir
    for name in ("last.pt", "best.pt", "metrics.csv", "loss.png", "config.json"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"val_mae", "val_psnr", "val_ssim", "lut_mae", "lut_psnr", "lut_ssim"} <= set(rows[0])
    config = json.loads((out / "config.json").read_text())
    state = load_checkpoint(out / "last.pt")
    assert config["split"] == state["split"]
    assert not set(state["split"]["train"]) & set(state["split"]["validation"])
    meta = checkpoint_metadata(state)
    assert meta.task == "T1w->T2w" and meta.pad_multiple == 16
    # target_scale: the median of the training subjects' target scales (computed independently).
    cohort = Cohort.discover(config["data"])
    scales = []
    for sid in state["split"]["train"]:
        sub = cohort.subject(sid)
        prepared = prepare_sources([sub.load("T1w")], meta.geometry, meta.normalisation)
        scales.append(prepare_target(sub.load("T2w"), prepared, meta.normalisation)[1])
    assert meta.normalisation.target_scale == pytest.approx(float(np.median(scales)))
    assert meta.training["seed"] == 0 and meta.training["epochs"] == 2
    validation = meta.training["validation"]
    assert set(validation) == {"model", "lut_baseline", "subset", "scope"}
    assert validation["scope"] == "volumes"  # the last epoch is scored on whole volumes
    assert validation["subset"]["slices"] > 0
    # metrics.csv: subset columns every epoch; 3D volume columns at the end and for the best.
    assert all(r["val_psnr"] for r in rows) and rows[1]["full_val_psnr"]
    assert float(rows[1]["full_val_psnr"]) == pytest.approx(
        validation["model"]["psnr"])
    assert {"optimizer_state", "scheduler_state", "rng_ranks", "epoch",
            "parity_slices"} <= set(state)
    assert result.best_epoch in (1, 2)
    # The best epoch is stored as a plain dict (what weights_only loading accepts).
    assert state["best"] == {"epoch": result.best_epoch, "metrics": result.best_metrics,
                             "subset": result.best_subset_metrics}
    assert np.isfinite(list(result.best_metrics.values())).all()


def test_best_epoch_record_reads_stored_and_older_checkpoints():
    stored = {"epoch": 3, "metrics": {"psnr": 21.0}, "subset": {"psnr": 20.0}}
    best = BestEpoch.from_dict(stored)
    assert best == BestEpoch(epoch=3, metrics={"psnr": 21.0}, subset={"psnr": 20.0})
    assert best.to_dict() == stored
    assert best.improved_by({"psnr": 20.5}) and not best.improved_by({"psnr": 20.0})
    # Checkpoints written before the subset metrics were stored: any epoch improves on it.
    older = BestEpoch.from_dict({"epoch": 2, "metrics": {"psnr": 18.0}})
    assert older.subset == {} and older.improved_by({"psnr": -100.0})
    # Patience counts epochs after the best one; 0 never stops, nor does "no best yet".
    assert older.patience_spent(2, 4) and not older.patience_spent(2, 3)
    assert not older.patience_spent(0, 10) and not BestEpoch().patience_spent(1, 5)


def test_resume_gives_the_same_weights(tmp_path_factory, tmp_path):
    reference = tiny_run(tmp_path_factory)
    base = dict(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"], target="T2w",
                out=str(tmp_path / "interrupted"), **TINY)
    resumed = assert_resume_matches(reference, base)
    assert [r["epoch"] for r in resumed.history] == [1, 2]


def test_refuses_to_overwrite_a_run_and_to_resume_nothing(tmp_path_factory, tmp_path):
    done = tiny_run(tmp_path_factory)
    data = str(tiny_cohort_dir(tmp_path_factory))
    with pytest.raises(InputError, match="--resume"):
        train(TrainConfig(data=data, sources=["T1w"], target="T2w", out=str(done.out_dir), **TINY))
    with pytest.raises(InputError, match="nothing to resume"):
        train(TrainConfig(data=data, sources=["T1w"], target="T2w", out=str(tmp_path / "new"),
                          **TINY), resume=True)
    with pytest.raises(InputError, match="target=.*PDw"):
        train(TrainConfig(data=data, sources=["T1w"], target="PDw", out=str(done.out_dir),
                          **TINY), resume=True)


def test_inference_keeps_the_source_geometry(tmp_path_factory):
    result = tiny_run(tmp_path_factory)
    state = load_checkpoint(result.best_checkpoint)
    sub = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subject(state["split"]["test"][0])
    t1 = sub.load("T1w")
    out = synthesize_with_checkpoint(result.best_checkpoint, [t1])
    assert out.shape == t1.shape and np.allclose(out.affine, t1.affine)
    data = np.asarray(out.dataobj)
    assert data.min() >= 0 and data.max() > 0 and np.isfinite(data).all()
    with pytest.raises(InputError, match="needs 1 input"):
        synthesize_with_checkpoint(state, [t1, t1])


def test_lut_baseline_learns_a_monotone_map():
    rng = np.random.default_rng(0)
    src = rng.uniform(-1, 1, (3, 1, 20, 20)).astype(np.float32)
    lut = IntensityLUT.fit([src], [-src])
    np.testing.assert_allclose(lut.predict(src), -src, atol=0.02)
    joint = IntensityLUT.fit([np.concatenate([src, src ** 2], axis=1)], [src ** 3])
    assert joint.joint is not None
    assert np.abs(joint.predict(np.concatenate([src, src ** 2], axis=1)) - src ** 3).max() < 0.1
    restored = IntensityLUT.from_dict(json.loads(json.dumps(joint.to_dict())))
    np.testing.assert_array_equal(restored.predict(src.repeat(2, axis=1)),
                                  joint.predict(src.repeat(2, axis=1)))


@pytest.mark.parametrize(("sources", "target"), [(("b0",), "T1w"), (("T1w", "T2w"), "PDw")])
def test_cross_grid_and_many_to_one_tasks(tmp_path_factory, sources, target):
    result = tiny_run(tmp_path_factory, sources, target)
    state = load_checkpoint(result.best_checkpoint)
    meta = checkpoint_metadata(state)
    assert meta.sources == list(sources) and meta.target == target
    assert state["parity_slices"].shape[1] == len(sources)
    sub = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subject(state["split"]["test"][0])
    images = [sub.load(c) for c in sources]
    out = synthesize_with_checkpoint(state, images)
    assert out.shape == images[0].shape  # b0 -> T1w: the DWI grid, not the T1w grid
    assert np.allclose(out.affine, images[0].affine)
    if sources == ("b0",):
        assert out.shape != sub.load("T1w").shape


def test_cli_trains_and_reports(tmp_path_factory, tmp_path):
    data = tiny_cohort_dir(tmp_path_factory)
    out = tmp_path / "cli_run"
    args = ["--data", str(data), "--source", "t1", "--target", "T2w", "--out", str(out),
            "--epochs", "1", "--slices-per-epoch", "4", "--batch-size", "4", "--threads", "1",
            "--device", "cpu"]
    result = CliRunner().invoke(cli_train.app, args)
    assert result.exit_code == 0, result.output
    assert "best epoch 1" in result.output and (out / "best.pt").exists()
    again = CliRunner().invoke(cli_train.app, args)
    assert again.exit_code != 0 and isinstance(again.exception, InputError)
    resumed = CliRunner().invoke(cli_train.app, args[:-8] + ["--resume", "--epochs", "2"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last.pt")["epoch"] == 1


def test_bad_config_values():
    with pytest.raises(ValueError, match="also a source"):
        TrainConfig(data="d", sources=["T1w"], target="t1", out="o")
    with pytest.raises(ValueError, match="unknown contrast"):
        TrainConfig(data="d", sources=["FLAIR"], target="T2w", out="o")
    assert TrainConfig(data="d", sources=["T1w"], target="T2w", out="o",
                       preset="reference").lr == 2e-4


def test_available_cpus_is_this_process_affinity():
    """What the threads, loader workers and cache jobs share out: the CPUs this process may
    use (its affinity mask), as before `os.process_cpu_count` existed."""
    import os

    from mri2mri.train.config import available_cpus

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    assert available_cpus() == expected >= 1


def test_missing_contrast_is_a_clear_error(tmp_path_factory, tmp_path):
    with pytest.raises(InputError, match="angio"):
        train(TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"],
                          target="angio", out=str(tmp_path / "r"), **TINY))


def test_synthesis_output_is_a_nifti(tmp_path_factory, tmp_path):
    result = tiny_run(tmp_path_factory)
    sub = Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[0]
    img = synthesize_with_checkpoint(result.best_checkpoint, [sub.load("T1w")])
    nib.save(img, tmp_path / "x.nii.gz")
    assert nib.load(tmp_path / "x.nii.gz").shape == img.shape


def test_fine_tuning_starts_from_the_given_weights_and_checks_them(tmp_path_factory, tmp_path):
    import torch

    from mri2mri.runtime.qc.synthesis import model_card
    from mri2mri.train.updates import build_training, pretrained_state

    pretrained = tiny_run(tmp_path_factory).best_checkpoint
    data = str(tiny_cohort_dir(tmp_path_factory))
    base = dict(data=data, sources=["T1w"], target="T2w", init_weights=str(pretrained), **TINY)
    config = TrainConfig(out=str(tmp_path / "tuned"), **base)
    # Before any step the network holds the pretrained weights, not the seed's.
    stored = load_checkpoint(pretrained)["model_state"]
    net = build_training(config, torch.device("cpu"), pretrained_state(config)).net
    assert all(torch.equal(net.state_dict()[k], v) for k, v in stored.items())
    fresh = build_training(config, torch.device("cpu")).net
    assert not all(torch.equal(fresh.state_dict()[k], v) for k, v in stored.items())
    # A fine-tuned run records where it started, resumes exactly, and says so on its card.
    reference = train(config)
    meta = checkpoint_metadata(load_checkpoint(reference.best_checkpoint))
    assert meta.training["init_weights"] == str(pretrained)
    assert str(pretrained) in str(model_card(meta))
    assert_resume_matches(reference, dict(base, out=str(tmp_path / "interrupted")))
    # Weights of another task or another network are refused before any data work.
    with pytest.raises(InputError, match=r"T1w->T2w model; this run trains T1w->PDw"):
        train(TrainConfig(**dict(base, target="PDw", out=str(tmp_path / "pd"))))
    with pytest.raises(InputError, match="network differs.*--context"):
        train(TrainConfig(**dict(base, context=1, out=str(tmp_path / "ctx"))))
    assert not (tmp_path / "pd").exists() and not (tmp_path / "ctx").exists()


def test_cli_fine_tunes_from_a_checkpoint(tmp_path_factory, tmp_path):
    pretrained = tiny_run(tmp_path_factory).best_checkpoint
    out = tmp_path / "tuned"
    result = CliRunner().invoke(cli_train.app, [
        "--data", str(tiny_cohort_dir(tmp_path_factory)), "--source", "T1w", "--target", "T2w",
        "--out", str(out), "--epochs", "1", "--slices-per-epoch", "8", "--batch-size", "4",
        "--threads", "1", "--init-weights", str(pretrained)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["init_weights"] == str(pretrained)
    missing = CliRunner().invoke(cli_train.app, [
        "--data", str(tiny_cohort_dir(tmp_path_factory)), "--source", "T1w", "--target", "T2w",
        "--out", str(tmp_path / "x"), "--init-weights", str(tmp_path / "nope.pt")])
    assert missing.exit_code != 0 and isinstance(missing.exception, InputError)
    assert str(missing.exception).endswith("nope.pt: checkpoint not found")
    assert not (tmp_path / "x").exists()
