"""`mri2mri-bench generalisation --leave-one-out`: folds, outputs, resume, lesion rule, --set."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from cli_helpers import exit_code
from scipy import ndimage
from test_train_cohort import make_cohort

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.generalisation import loo
from mri2mri.benchmarks.generalisation.lesion import bright_lesion_mask, volume_ml
from mri2mri.benchmarks.generalisation.overrides import parse_overrides
from mri2mri.benchmarks.generalisation.report import loo_table
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from mri2mri.train.metrics import GAIN_MATCHED, LEVEL_FREE

#: A recipe of about a second per fold on the tiny cohort.
TINY_SET = ["epochs=1", "slices_per_epoch=4", "batch_size=4", "val_slices=4"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished leave-one-out run (through the CLI) on four tiny subjects: (data, out)."""
    root = tmp_path_factory.mktemp("loo")
    data = make_cohort(root / "data", subjects=4, seed=1)
    out = root / "out"
    args = ["generalisation", "--leave-one-out", str(data), "--out", str(out), "--threads", "1"]
    assert exit_code(app, args + [a for s in TINY_SET for a in ("--set", s)]) == 0
    return data, out


def _subjects_in(folder) -> set[str]:
    return set(Cohort.discover(folder).ids)


def test_every_subject_is_held_out_once_and_never_trained_on(finished):
    data, out = finished
    ids = set(Cohort.discover(data).ids)
    assert {p.name for p in (out / "folds").iterdir()} == ids
    for held_out in ids:
        fold = out / "folds" / held_out
        assert _subjects_in(fold / "train") == ids - {held_out}
        assert _subjects_in(fold / "test") == {held_out}
        config = json.loads((fold / "run" / "config.json").read_text())
        assert config["data"] == str(fold / "train")
        assert held_out not in {i for split in config["split"].values() for i in split}
        assert config["epochs"] == 1 and config["slices_per_epoch"] == 4
        result = json.loads((fold / "result.json").read_text())
        assert result["subject"] == held_out and held_out not in result["train_subjects"]


def test_results_summary_and_table_agree(finished):
    _, out = finished
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "results.csv").open()))
    subjects = summary["subjects"]
    assert len(rows) == len(subjects) * 2 * 2  # model and lut, brain and brain without lesion
    for row in rows:
        entry = subjects[row["subject"]]
        scores = entry["scores"][row["method"]][row["region"]]
        for key in ("psnr", "ssim", "mae", *GAIN_MATCHED, *LEVEL_FREE):
            assert float(row[key]) == pytest.approx(scores[key])
        # With its level set right, a prediction scores at least as well as written.
        assert scores["psnr_gain_matched"] >= scores["psnr"] - 1e-9 and scores["level_gain"] > 0
        assert np.isfinite(scores["level_free_psnr"]) and -1 <= scores["level_free_ssim"] <= 1
        assert float(row["train_seconds"]) == pytest.approx(entry["train_seconds"])
        assert float(row["train_seconds"]) > 0 and float(row["score_seconds"]) > 0
    for method in ("model", "lut"):
        psnr = [float(r["psnr"]) for r in rows if (r["method"], r["region"]) == (method, "brain")]
        assert summary["mean"][method]["brain"]["psnr"] == pytest.approx(np.mean(psnr))
    # The synthetic phantoms have no T2w-bright lesion (their ventricles are dark on T1w).
    assert all(entry["lesion_ml"] == 0 for entry in subjects.values())
    assert summary["recipe"]["epochs"] == 1 and summary["recipe"]["preset"] == "small"
    assert summary["machine"]["cpu_count"] >= 1 and "torch" in summary["software"]
    table = (out / "table.md").read_text()
    assert table == loo_table(summary)
    for sid, entry in subjects.items():
        model, lut = entry["scores"]["model"]["brain"], entry["scores"]["lut"]["brain"]
        assert (f"| {sid} | {model['psnr']:.2f} / {model['ssim']:.3f} | "
                f"{lut['psnr']:.2f} / {lut['ssim']:.3f} | {model['psnr'] - lut['psnr']:+.2f} |"
                ) in table
    assert f"| mean ({len(subjects)}) |" in table and "zero-shot" not in table
    # The level-free table first, then the scale-restored one, then the gain-matched one.
    assert table.startswith("Level-free")
    assert table.index("Level-free") < table.index("Scale-restored") < table.index("Gain-matched")
    for sid, entry in subjects.items():
        model, lut = entry["scores"]["model"], entry["scores"]["lut"]
        cells = [f"{m['brain']['level_free_psnr']:.2f} / {m['brain']['level_free_ssim']:.3f} / "
                 f"{m['brain']['level_free_mae']:.3f}" for m in (model, lut)]
        gaps = [f"{model[r]['level_free_psnr'] - lut[r]['level_free_psnr']:+.2f}"
                for r in ("brain", "brain_without_lesion")]
        assert f"| {sid} | {' | '.join(cells + gaps)} |" in table
    for sid, entry in subjects.items():
        model, lut = entry["scores"]["model"]["brain"], entry["scores"]["lut"]["brain"]
        assert (f"| {sid} | {model['psnr_gain_matched']:.2f} | "
                f"{lut['psnr_gain_matched']:.2f} | "
                f"{model['psnr_gain_matched'] - lut['psnr_gain_matched']:+.2f} | "
                f"{model['level_gain']:.2f} | {lut['level_gain']:.2f} |") in table
    # The out-of-distribution check on each held-out subject, beside its loss to the LUT.
    assert "Out-of-distribution check" in table
    for row in rows:
        verdict = subjects[row["subject"]]["disagreement"]
        if row["method"] == "lut":
            assert row["disagreement"] == row["warned"] == ""
            continue
        assert verdict["figure"] > 0
        assert float(row["disagreement"]) == pytest.approx(verdict["figure"])
        assert float(row["disagreement_threshold"]) == pytest.approx(verdict["threshold"])
        assert row["warned"] == str(verdict["figure"] > verdict["threshold"])
    for row in rows:  # the feature check's columns, from the same summary
        verdict = subjects[row["subject"]]["features"]
        if row["method"] == "lut":
            assert row["feature_figure"] == row["feature_warned"] == ""
            continue
        assert verdict["figure"] > 0 and verdict["reference"] == "recorded in the checkpoint"
        assert float(row["feature_figure"]) == pytest.approx(verdict["figure"])
        assert float(row["feature_threshold"]) == pytest.approx(verdict["threshold"])
        assert row["feature_warned"] == str(verdict["figure"] > verdict["threshold"])
    for sid, entry in subjects.items():
        verdict, found = entry["disagreement"], entry["features"]
        assert f"| {sid} | {_psnr_gap(entry)} | {verdict['figure']:.4f} / " \
               f"{verdict['threshold']:.4f} | {'**yes**' if verdict['flagged'] else 'no'} | " \
               f"{found['figure']:.3f} / {found['threshold']:.3f} |" in table


def test_rerun_reuses_finished_folds_and_scores_a_zero_shot_run(finished, tmp_path, monkeypatch):
    data, done = finished
    out = tmp_path / "out"
    shutil.copytree(done, out, symlinks=True)

    def no_training(config, **kwargs):
        raise AssertionError(f"trained again: {config.data}")

    monkeypatch.setattr(loo, "train", no_training)
    # A fold finished before the model-based figures were reported gets them without
    # training again; its checkpoint, older than the feature check, gets a feature reference
    # made from its cohort (in memory: the checkpoint file stays as it was).
    result_file = out / "folds" / "sub-02" / "result.json"
    stored = json.loads(result_file.read_text())
    expected = stored.pop("disagreement")
    expected_features = stored.pop("features")
    expected_level = {method: {region: {k: scores.pop(k) for k in (*GAIN_MATCHED, *LEVEL_FREE)}
                               for region, scores in regions.items()}
                      for method, regions in stored["scores"].items()}
    result_file.unlink()  # a copy, not the finished run's file
    result_file.write_text(json.dumps(stored))
    best = out / "folds" / "sub-02" / "run" / "best.pt"
    state = load_checkpoint(best)
    meta = checkpoint_metadata(state)
    del meta.ood["features"]
    best.unlink()  # a copy, too
    save_checkpoint({**state, "metadata": meta.to_json()}, best)
    zero_run = out / "folds" / "sub-01" / "run"
    summary = loo.leave_one_out(data, out, overrides=TINY_SET, zero_shot=zero_run, threads=1)
    sub01 = summary["subjects"]["sub-01"]["scores"]
    # The zero-shot run is sub-01's own fold: the same network and LUT, scored the same way.
    for zero, fold in (("zero_shot", "model"), ("zero_shot_lut", "lut")):
        for region, scores in sub01[fold].items():
            assert sub01[zero][region] == pytest.approx(scores)
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["method"] for r in rows} == {"model", "lut", "zero_shot", "zero_shot_lut"}
    assert all(r["train_seconds"] == "" for r in rows if r["method"].startswith("zero_shot"))
    assert "| zero-shot (run) |" in (out / "table.md").read_text()
    assert summary["subjects"]["sub-02"]["disagreement"] == pytest.approx(expected)
    for method, regions in expected_level.items():  # and the level figures it lacked
        for region, level in regions.items():
            assert summary["subjects"]["sub-02"]["scores"][method][region] == \
                pytest.approx(stored["scores"][method][region] | level)
    assert json.loads(result_file.read_text())["disagreement"] == pytest.approx(expected)
    remade = summary["subjects"]["sub-02"]["features"]
    assert remade["reference"] == "made from the checkpoint's cohort"
    for key in ("figure", "threshold", "reference_max"):
        assert remade[key] == pytest.approx(expected_features[key], rel=1e-3)
    assert "features" not in checkpoint_metadata(load_checkpoint(best)).ood
    sub01 = summary["subjects"]["sub-01"]
    for check in ("disagreement", "features"):
        assert sub01[f"zero_shot_{check}"] == pytest.approx(sub01[check])
    table = (out / "table.md").read_text()
    assert "zero-shot disagreement" in table and "zero-shot features / threshold" in table
    assert "zero-shot PSNR, gain-matched (dB)" in table and "zero-shot PSNR (dB) / SSIM" in table
    assert "from the checkpoint and its cohort (trained before the check existed): " \
           "sub-02." in table
    # Another recipe is another fingerprint: its folds are trained, not reused.
    with pytest.raises(AssertionError, match="trained again"):
        loo.leave_one_out(data, out, overrides=[*TINY_SET[1:], "epochs=2"], threads=1)


def test_report_only_renders_the_summary_again(finished, tmp_path):
    data, done = finished
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(done / "summary.json", out)
    args = ["generalisation", "--leave-one-out", str(data), "--out", str(out), "--report-only"]
    assert exit_code(app, args) == 0
    assert (out / "table.md").read_text() == (done / "table.md").read_text()
    assert (out / "results.csv").read_text() == (done / "results.csv").read_text()
    # A summary written before the feature check still renders, without its columns.
    summary = json.loads((done / "summary.json").read_text())
    for entry in summary["subjects"].values():
        del entry["features"]
        for regions in entry["scores"].values():  # and before the level figures
            for scores in regions.values():
                for key in (*GAIN_MATCHED, *LEVEL_FREE):
                    del scores[key]
    (out / "summary.json").write_text(json.dumps(summary))
    table = loo.rerender(out)
    assert "features / threshold" not in table and "disagreement / threshold" in table
    assert "Gain-matched" not in table and "Level-free" not in table
    assert table.startswith("| held-out subject | network PSNR (dB) / SSIM |")
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(r["feature_figure"] == r["feature_warned"] == "" for r in rows)
    assert all(r[k] == "" for r in rows for k in (*GAIN_MATCHED, *LEVEL_FREE))


def test_report_only_reads_the_gain_matched_psnr_under_its_former_name(finished, tmp_path):
    """Summaries written before the rename call the gain-matched PSNR psnr_level_free."""
    _, done = finished
    out = tmp_path / "out"
    out.mkdir()
    summary = json.loads((done / "summary.json").read_text())
    for entry in [*summary["subjects"].values(), {"scores": summary["mean"]}]:
        for regions in entry["scores"].values():
            for scores in regions.values():
                scores["psnr_level_free"] = scores.pop("psnr_gain_matched")
    (out / "summary.json").write_text(json.dumps(summary))
    assert loo.rerender(out) == (done / "table.md").read_text()
    assert (out / "results.csv").read_text() == (done / "results.csv").read_text()
    assert "psnr_level_free" not in (out / "summary.json").read_text()


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.array(centre), axis=-1) <= radius


def _head(blob_t1: float | None = None, centre=(32, 32, 32), radius=10.0):
    """A 1 mm 'brain' ball (radius 28 mm) with, optionally, a T2w-bright ball inside it."""
    rng = np.random.default_rng(0)
    shape = (64, 64, 64)
    brain = _ball(shape, (32, 32, 32), 28)
    t1 = np.where(brain, 100.0, 0.0) + rng.normal(0, 3, shape) * brain
    t2 = np.where(brain, 100.0, 0.0) + rng.normal(0, 3, shape) * brain
    blob = _ball(shape, centre, radius) & brain
    if blob_t1 is not None:
        t1[blob], t2[blob] = blob_t1, 250.0
    return t1, t2, brain, blob


def test_lesion_rule_finds_a_bright_blob_of_known_size():
    t1, t2, brain, blob = _head(blob_t1=95.0)
    lesion = bright_lesion_mask(t1, t2, brain)
    six = ndimage.generate_binary_structure(3, 1)
    grown = ndimage.binary_dilation(blob, six, iterations=2)
    assert lesion[blob].all() and not lesion[~grown].any()  # the blob, dilated by 2 voxels
    # The opening trims a few voxels off the ball's bumpy surface before the dilation.
    assert volume_ml(lesion, (1, 1, 1)) == pytest.approx(grown.sum() / 1000, rel=0.03)
    assert 4.0 < volume_ml(blob, (1, 1, 1)) < 4.3  # a 10 mm ball: 4.19 ml
    # At 0.5 mm the same 10-voxel ball is 0.52 ml, under the 2 ml floor.
    assert volume_ml(bright_lesion_mask(t1, t2, brain, (0.5, 0.5, 0.5)), (0.5,) * 3) == 0


def test_lesion_rule_leaves_clean_brains_csf_and_small_or_shallow_spots_alone():
    for t1_value, centre, radius in ((None, (32, 32, 32), 10.0),  # clean
                                     (30.0, (32, 32, 32), 10.0),  # dark on T1w: CSF
                                     (95.0, (32, 32, 32), 6.0),  # 0.9 ml
                                     (95.0, (32, 32, 54), 9.0)):  # 2.7 ml, 6 mm deep
        t1, t2, brain, _ = _head(t1_value, centre, radius)
        assert not bright_lesion_mask(t1, t2, brain).any(), (t1_value, centre, radius)


def test_set_parses_values_with_the_field_types():
    parsed = parse_overrides(["epochs=3", "lr=1e-3", "cache=none", "workers=auto",
                              "batch-size=2", "compile=true", "augment=strong,randomize=0.7"])
    assert parsed == {"epochs": 3, "lr": 1e-3, "cache": None, "workers": "auto",
                      "batch_size": 2, "compile": True, "augment": "strong,randomize=0.7"}
    assert parse_overrides(["workers=2"]) == {"workers": 2}
    for bad in ("epochs=many", "compile=maybe", "epochs"):
        with pytest.raises(InputError):
            parse_overrides([bad])


@pytest.mark.parametrize(("extra", "says"), [
    (["--set", "epoch=3"], "'epoch' is not a TrainConfig field"),
    (["--set", "out=x"], "set by the leave-one-out itself"),
    (["--set", "epochs=0"], "epochs must be at least 1"),
    (["--run", "somewhere"], "without --run and --cohort"),
])
def test_bad_options_are_one_line_errors_before_any_work(tmp_path, capsys, extra, says):
    data = make_cohort(tmp_path / "data", subjects=3, seed=2)
    out = tmp_path / "out"
    args = ["generalisation", "--leave-one-out", str(data), "--out", str(out), *extra]
    assert exit_code(app, args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err
    assert not out.exists()


def test_needs_three_subjects_and_one_mode(tmp_path, capsys):
    data = make_cohort(tmp_path / "data", subjects=2, seed=2)
    with pytest.raises(InputError, match="at least 3 subjects"):
        loo.leave_one_out(data, tmp_path / "out")
    assert exit_code(app, ["generalisation", "--out", str(tmp_path / "out")]) == 1
    assert "--leave-one-out DIR" in capsys.readouterr().err


def _psnr_gap(entry: dict) -> str:
    scores = entry["scores"]
    return f"{scores['model']['brain']['psnr'] - scores['lut']['brain']['psnr']:+.2f}"
