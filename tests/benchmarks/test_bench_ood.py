"""`mri2mri-bench ood-threshold`: distances of held-out and wrong inputs, on the demo cohort."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import exit_code
from typer.testing import CliRunner

from mri2mri.benchmarks.cli import app
from mri2mri.data.cohort import Cohort
from mri2mri.runtime.synthesis.ood import DISTANCE_THRESHOLD

CASES = ["held-out T1w", "T2w as T1w", "PDw as T1w", "CT-like", "bias x0.2-x5", "bias x0.33-x3"]


def test_writes_the_rows_and_prints_the_table(demo_cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "ood"
    done = CliRunner().invoke(app, ["ood-threshold", "--data", str(demo_cohort),
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    result = json.loads((out / "ood_threshold.json").read_text())
    assert result["threshold"] == DISTANCE_THRESHOLD
    cohort = Cohort.discover(demo_cohort)
    held_out = [s.id for s in cohort.split("validation") + cohort.split("test")]
    first, *rows = result["rows"]
    assert first["label"] == "training (max)" and not first["flagged"]
    assert first["subject"] == f"n={len(cohort.split('train'))}"
    assert 0 < first["distance"] < DISTANCE_THRESHOLD
    assert [(r["subject"], r["label"]) for r in rows] == [(s, c) for s in held_out for c in CASES]
    for row in rows:  # the threshold separates the held-out T1w from every wrong input
        assert row["flagged"] == (row["label"] != "held-out T1w") == (
            row["distance"] > DISTANCE_THRESHOLD), row
    lines = done.stdout.splitlines()
    assert lines[0] == f"threshold {DISTANCE_THRESHOLD}"
    for row, line in zip(result["rows"], lines[1:-1], strict=True):
        assert line.split()[-2 if row["flagged"] else -1] == f"{row['distance']:.4f}"
        assert line.startswith(row["label"]) and row["subject"] in line
        assert line.endswith("FLAGGED") == row["flagged"]
    assert lines[-1] == f"wrote {out / 'ood_threshold.json'}"


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ood"
    (tmp_path / "empty").mkdir()
    assert exit_code(app, ["ood-threshold", "--data", str(tmp_path / "empty"),
                           "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'empty'}: no BIDS subjects")
    assert not out.exists()
    out.write_text("a file")
    assert exit_code(app, ["ood-threshold", "--data", str(tmp_path / "empty"),
                           "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"error: {out}: exists and is not a directory\n"
