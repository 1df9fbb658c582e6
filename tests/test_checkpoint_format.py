"""The checkpoint as declared (`Checkpoint`, `RunState`, format 2): checked on load, format 1
converted (it exports and resumes), and the run's one finish step (each final checkpoint
written once)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_train_cohort import TINY, tiny_cohort_dir, tiny_run

from mri2mri.export.onnx_export import export_checkpoint
from mri2mri.runtime.core.errors import InputError
from mri2mri.train import trainer
from mri2mri.train.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mri2mri.train.config import TrainConfig


def _as_format_1(path: Path, out: Path, *, oldest: bool = False) -> Path:
    """`path`'s checkpoint in the layout format 1 wrote (the first rank's RNG state also
    alone as ``rng``); `oldest`: as the first format-1 writers did, without the entries
    added later (``rng_ranks``, ``scaler_state``, ``lut_full``, the best epoch's subset)."""
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    payload["rng"] = payload["rng_ranks"][0]
    if oldest:
        for key in ("rng_ranks", "scaler_state", "lut_full"):
            del payload[key]
        payload["best"] = {k: v for k, v in payload["best"].items() if k != "subset"}
    torch.save(payload, out)  # as it was: not through save_checkpoint
    return out


def test_format_1_checkpoints_are_converted_on_load(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    assert torch.load(run.last_checkpoint, weights_only=True)["format_version"] == 2 \
        == FORMAT_VERSION
    new = read_checkpoint(run.last_checkpoint)
    old = read_checkpoint(_as_format_1(run.last_checkpoint, tmp_path / "old.pt", oldest=True))
    assert old.run is not None and new.run is not None
    assert len(old.run.rng_ranks) == 1
    assert torch.equal(old.run.rng_ranks[0]["torch"], new.run.rng_ranks[0]["torch"])
    assert old.run.scaler_state == {} and old.run.lut_full is None
    assert old.run.best == {**new.run.best, "subset": {}}
    assert old.metadata == new.metadata and old.run.history == new.run.history
    assert all(torch.equal(old.model_state[k], v) for k, v in new.model_state.items())
    # Written again, it is a format-2 checkpoint, without the stand-alone "rng".
    save_checkpoint(old, tmp_path / "again.pt")
    again = torch.load(tmp_path / "again.pt", weights_only=True)
    assert again["format_version"] == 2 and "rng" not in again and "rng_ranks" in again


def test_a_format_1_checkpoint_exports(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    old = _as_format_1(run.best_checkpoint, tmp_path / "best_v1.pt", oldest=True)
    report = export_checkpoint(old, tmp_path / "model.onnx")
    current = export_checkpoint(run.best_checkpoint, tmp_path / "current.onnx")
    assert report.max_abs_diff <= report.tolerance
    assert report.metadata.training["best_epoch"] == run.best_epoch
    assert report.metadata.training["validation"] == current.metadata.training["validation"]


def test_a_format_1_run_resumes_exactly(tmp_path_factory, tmp_path):
    """A run interrupted before the format changed (its last.pt format 1) resumes to the
    weights of an uninterrupted run, and goes on in format 2."""
    reference = tiny_run(tmp_path_factory)
    config = TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"],
                         target="T2w", out=str(tmp_path / "interrupted"), **TINY)
    last = Path(config.out) / "last.pt"

    def stop_after_first_epoch(epoch: int, row: dict) -> None:
        if epoch == 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        trainer.train(config, on_epoch_end=stop_after_first_epoch)
    _as_format_1(last, last)
    resumed = trainer.train(config, resume=True)
    a = load_checkpoint(reference.last_checkpoint)["model_state"]
    b = load_checkpoint(resumed.last_checkpoint)["model_state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(last, weights_only=True)["format_version"] == 2


@pytest.mark.parametrize("version", [0, 3, 99, None])
def test_an_unknown_format_version_is_a_one_line_error(tmp_path_factory, tmp_path, version):
    payload = torch.load(tiny_run(tmp_path_factory).best_checkpoint, weights_only=True)
    payload["format_version"] = version
    path = tmp_path / "future.pt"
    torch.save(payload, path)
    for load in (read_checkpoint, lambda p: export_checkpoint(p, tmp_path / "x.onnx")):
        with pytest.raises(InputError) as info:
            load(path)
        message = str(info.value)
        assert message == (f"{path}: checkpoint format {version} is not supported (this "
                           "version reads 1, 2)")
        assert "\n" not in message
    assert not (tmp_path / "x.onnx").exists()


def test_entries_are_checked_against_the_declaration(tmp_path_factory, tmp_path):
    payload = torch.load(tiny_run(tmp_path_factory).last_checkpoint, weights_only=True)
    cases = {"unknown entries.*: extra": {**payload, "extra": 1},
             r"incomplete.*\(missing epoch, history\)":
                 {k: v for k, v in payload.items() if k not in ("epoch", "history")},
             r"incomplete.*\(missing model_state\)":
                 {k: v for k, v in payload.items() if k != "model_state"},
             r"wrong type: epoch \(str\)": {**payload, "epoch": "1"}}
    for message, bad in cases.items():
        path = tmp_path / "bad.pt"
        torch.save(bad, path)
        with pytest.raises(InputError, match=message):
            read_checkpoint(path)
        with pytest.raises(InputError, match=message):
            save_checkpoint({k: v for k, v in bad.items() if k != "format"}, path)


def test_a_model_only_checkpoint_exports_but_does_not_resume(tmp_path_factory, tmp_path):
    run = tiny_run(tmp_path_factory)
    full = read_checkpoint(run.best_checkpoint)
    model_only = Checkpoint(metadata=full.metadata, model_config=full.model_config,
                            model_state=full.model_state, parity_slices=full.parity_slices)
    out = tmp_path / "run"
    out.mkdir()
    save_checkpoint(model_only, out / "last.pt")
    assert set(load_checkpoint(out / "last.pt")) == {
        "format", "format_version", "metadata", "model_config", "model_state", "parity_slices"}
    assert read_checkpoint(out / "last.pt").run is None
    assert export_checkpoint(out / "last.pt", tmp_path / "m.onnx").max_abs_diff <= 1e-4
    config = TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"],
                         target="T2w", out=str(out), **TINY)
    with pytest.raises(InputError, match="cannot resume: a model-only checkpoint"):
        trainer.train(config, resume=True)


@pytest.mark.parametrize("best_first", [False, True], ids=["best-is-last", "best-is-first"])
def test_each_final_checkpoint_is_written_once_after_the_last_epoch(
        tmp_path_factory, tmp_path, monkeypatch, best_first):
    """The finish step loads best.pt once and writes best.pt and last.pt once each, whether
    or not the best epoch still had to be scored on whole volumes."""
    # Epoch 1 stays best (its volumes are scored in the finish step), or each is better.
    monkeypatch.setattr(trainer.BestEpoch, "improved_by",
                        lambda self, subset: self.epoch < 0 or not best_first)
    events: list[tuple[str, str]] = []
    save, read = trainer.save_checkpoint, trainer.read_checkpoint

    def counted_save(state, path):
        events.append(("save", Path(path).name))
        return save(state, path)

    def counted_read(path, *args, **kwargs):
        events.append(("read", Path(path).name))
        return read(path, *args, **kwargs)

    monkeypatch.setattr(trainer, "save_checkpoint", counted_save)
    monkeypatch.setattr(trainer, "read_checkpoint", counted_read)
    config = TrainConfig(data=str(tiny_cohort_dir(tmp_path_factory)), sources=["T1w"],
                         target="T2w", out=str(tmp_path / "run"), **TINY)
    result = trainer.train(config, on_epoch_end=lambda epoch, row: events.append(
        ("epoch end", str(epoch))))
    last_epoch = events.index(("epoch end", str(config.epochs - 1)))
    assert events[last_epoch + 1:] == [("read", "best.pt"), ("save", "best.pt"),
                                       ("save", "last.pt")]
    best, last = read_checkpoint(result.best_checkpoint), read_checkpoint(result.last_checkpoint)
    assert best.run is not None and last.run is not None
    assert best.run.best == last.run.best == {
        "epoch": result.best_epoch, "metrics": result.best_metrics,
        "subset": result.best_subset_metrics}
    assert last.run.epoch == config.epochs - 1 and last.run.history == result.history
    meta = best.model_metadata()
    assert meta.training["validation"]["scope"] == "volumes"
    assert meta.training["validation"]["model"] == result.best_metrics
    assert {"disagreement", "features"} <= set(meta.ood)
    assert set(last.model_metadata().ood) == (set(meta.ood) if not best_first else set())
    assert result.best_epoch == (1 if best_first else config.epochs)
    assert result.history[result.best_epoch - 1]["full_val_psnr"] is not None
    assert best.run.history == result.history
