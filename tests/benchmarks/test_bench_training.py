"""`mri2mri-bench training-*`: the memory probe on small commands, and bad input (no training)."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
from cli_helpers import exit_code
from typer.testing import CliRunner

from mri2mri.benchmarks.cli import app
from mri2mri.benchmarks.training.memory import TIMELINE_COLUMNS, LastLine

# Prints a phase, then allocates 50 MB in the next phase, then frees it: the peak must be
# found in the "allocating" phase, and the "freed" phase must show the memory given back.
PHASES = ("import numpy as np, time; print('phase one', flush=True); time.sleep(0.4); "
          "print('allocating'); a = np.ones(50_000_000, np.uint8); a[:] = 2; time.sleep(0.8); "
          "del a; print('freed'); time.sleep(0.4)")


def _cli(args: list[str]) -> int:
    return exit_code(app, args)


def test_memory_peak_timeline_and_phase(tmp_path: Path) -> None:
    results, timeline, log = tmp_path / "mem.json", tmp_path / "timeline.csv", tmp_path / "log"
    args = ["training-memory", "--label", "numpy", "--json", str(results), "--timeline",
            str(timeline), "--log", str(log), "--", sys.executable, "-c", PHASES]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    [result] = json.loads(results.read_text())
    assert result["label"] == "numpy" and result["command"][-1] == PHASES
    assert result["returncode"] == 0 and not result["killed_at_limit"]
    assert result["peak_rss_gb"] >= 0.05 and result["peak_pss_gb"] >= 0.04
    assert result["peak_during"] == "allocating"
    assert log.read_text().split() == ["phase", "one", "allocating", "freed"]

    with timeline.open() as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == TIMELINE_COLUMNS and len(rows) == result["samples"] >= 5
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds)
    peak = max(rows, key=lambda r: float(r["rss_gb"]))
    assert peak["last_line"] == "allocating"
    assert float(peak["seconds"]) == pytest.approx(result["peak_at_seconds"], abs=0.01)
    assert float(peak["rss_gb"]) == pytest.approx(result["peak_rss_gb"], abs=1e-4)
    freed = [float(r["rss_gb"]) for r in rows if r["last_line"] == "freed"]
    assert freed and max(freed) < result["peak_rss_gb"] - 0.04
    assert any(r["last_line"] == "phase one" for r in rows)

    # A second measurement is appended to the same results file; no log: a temporary one.
    again = CliRunner().invoke(app, ["training-memory", "--label", "tiny", "--json",
                                     str(results), "--", sys.executable, "-c", "print(1)"])
    assert again.exit_code == 0, again.output
    assert [r["label"] for r in json.loads(results.read_text())] == ["numpy", "tiny"]


def test_memory_passes_the_exit_code_and_the_commands_options(tmp_path: Path) -> None:
    results = tmp_path / "mem.json"
    # Without "--" too: the options after the command are the command's, not ours.
    done = CliRunner().invoke(app, [
        "training-memory", "--label", "fails", "--json", str(results), sys.executable, "-c",
        "import sys; print(sys.argv[1:]); sys.exit(3)", "--json", "--label"])
    assert done.exit_code == 3, done.output
    [result] = json.loads(results.read_text())
    assert result["returncode"] == 3
    assert result["command"][-2:] == ["--json", "--label"]


def test_memory_bad_input(tmp_path: Path, capsys) -> None:
    results = tmp_path / "mem.json"
    assert _cli(["training-memory", "--label", "x", "--json", str(results)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no command to measure") and err.count("\n") == 1
    assert _cli(["training-memory", "--label", "x", "--json", str(results), "--",
                 str(tmp_path / "no-such-program")]) == 1
    assert f"error: {tmp_path / 'no-such-program'}: cannot run" in capsys.readouterr().err
    assert _cli(["training-memory", "--label", "x", "--json", str(tmp_path / "no" / "r.json"),
                 "--", sys.executable, "-c", "pass"]) == 1
    assert "output directory" in capsys.readouterr().err
    assert not results.exists()


def test_last_line_reads_only_complete_lines(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("wb") as out:
        tail = LastLine(log)
        out.write(b"one\n\n  \nbar 10%\rbar 20%\rhalf")
        out.flush()
        assert tail.update() == "bar 20%"
        out.write(b" a line\n\n")
        out.flush()
        assert tail.update() == "half a line"
        out.write(b"no end")
        out.flush()
        assert tail.update() == "half a line"
        assert tail.update(final=True) == "no end"
        tail.close()


@pytest.mark.parametrize("command", ["training-memory", "training-loader", "training-ddp"])
def test_help(command: str) -> None:
    done = CliRunner().invoke(app, [command, "--help"])
    assert done.exit_code == 0, done.output
    assert "--json" in done.output


@pytest.mark.parametrize("args", [["training-loader", "--cache", "CACHE"],
                                  ["training-ddp", "--work", "WORK"]])
def test_missing_data_is_one_line_error(args: list[str], tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    args = [a.replace("CACHE", str(tmp_path / "c")).replace("WORK", str(tmp_path / "w"))
            for a in args]
    assert _cli([*args, "--data", str(missing), "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {missing}: dataset directory not found\n"
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "w").exists()


def test_memory_limit_kills_the_tree(tmp_path: Path) -> None:
    results, log = tmp_path / "mem.json", tmp_path / "log"
    done = CliRunner().invoke(app, ["training-memory", "--label", "big", "--json", str(results),
                                    "--log", str(log), "--limit-gb", "0.05", "--",
                                    sys.executable, "-c", PHASES])
    assert done.exit_code == 128 + 9, done.output  # SIGKILL, reported as a shell would
    [result] = json.loads(results.read_text())
    assert result["killed_at_limit"] and result["returncode"] == -9
    assert result["peak_during"] == "allocating" and "freed" not in log.read_text()


def test_ddp_failed_run_shows_its_output(tmp_path: Path, monkeypatch, capsys) -> None:
    import subprocess

    from mri2mri.benchmarks.training import ddp

    def fails(*args, **kwargs):
        raise subprocess.CalledProcessError(2, ["mri2mri-train", "--data", "D"],
                                            "epoch 1\n", "error: D: broken\n")

    monkeypatch.setattr(ddp, "compare", fails)
    (tmp_path / "c" / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "c" / "sub-01" / "anat" / "sub-01_T1w.nii.gz").touch()  # discovered by name
    assert _cli(["training-ddp", "--data", str(tmp_path / "c"), "--work", str(tmp_path / "w"),
                 "--json", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["epoch 1", "error: D: broken",
                   "error: a training run failed (exit 2): mri2mri-train --data D"]
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(("two", "agree"), [([1.0, 0.8020], True), ([1.0, 0.8060], False)])
def test_ddp_verdict_uses_the_tolerance(tmp_path: Path, monkeypatch, capsys, two, agree) -> None:
    from mri2mri.benchmarks.training import ddp

    curves = {"warm": [1.0], "one": [1.0, 0.8], "two": two}

    def fake_train(command, out, env):
        return {"loss": curves[out.name], "epoch_seconds": [1.0] * len(curves[out.name]),
                "wall_seconds": 1.0}

    monkeypatch.setattr(ddp, "_train", fake_train)
    (tmp_path / "c" / "sub-01" / "anat").mkdir(parents=True)
    (tmp_path / "c" / "sub-01" / "anat" / "sub-01_T1w.nii.gz").touch()
    code = _cli(["training-ddp", "--data", str(tmp_path / "c"), "--work", str(tmp_path / "w"),
                 "--json", str(tmp_path / "r.json"), "--epochs", "2"])
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["tolerance"] == ddp.TOLERANCE == 5e-3
    assert result["max_relative_loss_difference"] == pytest.approx(abs(two[1] - 0.8) / 0.8)
    assert result["agree"] is agree and code == (0 if agree else 1)
    assert ("loss curves agree" if agree else "loss curves DISAGREE") in capsys.readouterr().out


def test_loader_benchmark_times_the_trainers_step(tmp_path_factory, tmp_path: Path) -> None:
    import torch
    from test_train_cohort import tiny_cohort_dir

    from mri2mri.benchmarks.training.loader import measure

    data = tiny_cohort_dir(tmp_path_factory)
    row = measure(data, tmp_path / "cache", preset="small", device=torch.device("cpu"),
                  precision="fp32", batch=4, steps=2, workers=0, repeats=2)
    assert row["precision"] == "fp32" and row["workers"] == 0
    assert len(row["all"]["loader"]) == len(row["all"]["memory"]) == 2
    assert row["loader_slices_per_s"] > 0 and row["memory_slices_per_s"] > 0
    assert row["ratio"] == row["loader_slices_per_s"] / row["memory_slices_per_s"]
