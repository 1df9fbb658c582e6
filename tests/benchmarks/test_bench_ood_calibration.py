"""`mri2mri-bench ood-calibration`: its inputs, its table and its ranking (no network)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from mri2mri.benchmarks.ood.calibration import CHECKS, ranking, table, verdicts
from mri2mri.benchmarks.ood.inputs import cases, contrast_enhanced, flair_like, phantom


def _brain(shape=(24, 28, 20), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt(sum(((g - c) / (s / 2.4)) ** 2 for g, c, s in zip(grid, centre, shape,
                                                                  strict=True)))
    return np.where(r < 1, 100 + 50 * r + rng.normal(0, 2, shape), 0).astype(np.float32)


def _real(root: Path) -> Path:
    for sid in ("sub-01", "sub-02"):
        anat = root / sid / "anat"
        anat.mkdir(parents=True)
        for k, contrast in enumerate(("T1w", "T2w")):
            nib.save(nib.Nifti1Image(_brain(seed=k), np.eye(4)), anat / f"{sid}_{contrast}.nii.gz")
    return root


def test_cases_cover_real_wrong_and_uncovered_inputs(tmp_path: Path) -> None:
    found = cases(_real(tmp_path), "T1w", ["sub-01", "sub-02"], wrong=["T2w"])
    labels = [(c.label, c.kind, c.subject) for c in found]
    assert labels[:2] == [("real T1w", "real", "sub-01"), ("real T1w", "real", "sub-02")]
    assert ("T2w as T1w", "wrong contrast", "sub-02") in labels
    assert {c.label for c in found if c.kind == "uncovered"} == {
        "CT-like", "contrast-enhanced T1w", "FLAIR-like", "water phantom"}
    # Given to a T2w model, an enhanced T1w is a wrong contrast.
    as_t2 = cases(tmp_path, "T2w", ["sub-01"], wrong=["T1w"])
    assert ("contrast-enhanced T1w", "wrong contrast") in [(c.label, c.kind) for c in as_t2]


def test_made_inputs_change_what_they_say() -> None:
    t1 = nib.Nifti1Image(_brain((60, 60, 50)), np.eye(4))
    data = np.asarray(t1.dataobj)
    enhanced = np.asarray(contrast_enhanced(t1).dataobj)
    assert enhanced.max() > 1.4 * np.percentile(data[data > 0], 99)
    flair = np.asarray(flair_like(t1).dataobj)
    brightest = data > np.percentile(data[data > 0], 85)
    assert flair[brightest].mean() < data[brightest].mean() / 3
    water = np.asarray(phantom((240, 240, 8)).dataobj)  # 1 mm: 190 mm wide, 24 mm inserts
    assert water.shape == (240, 240, 8) and water[0, 0, 0] < 200
    assert water[120, 120, 4] == pytest.approx(1000, abs=100) and water.max() > 1500


def _row(kind: str, subject: str, gain: float | None, figure: float, warns: bool) -> dict:
    checks = {key: {"figure": figure, "threshold": 0.5, "warns": warns} for key, _ in CHECKS}
    return {"input": f"{kind} input", "kind": kind, "subject": subject, "gain_db": gain,
            "should_warn": "no" if kind == "real" else "yes", "checks": checks}


def test_ranking_and_table() -> None:
    rows = [_row("real", f"sub-0{i}", gain, figure, figure > 0.5)
            for i, (gain, figure) in enumerate(((3.0, 0.1), (2.0, 0.2), (1.0, 0.6)), 1)]
    rows.append(_row("wrong contrast", "sub-01", None, 0.9, True))
    rank = ranking(rows)
    assert rank["subjects"] == 3 and rank["contrast"]["spearman"] == -1.0
    assert rank["contrast"]["by_figure"] == ["sub-01", "sub-02", "sub-03"]
    text = table({"model": "m.onnx", "task": "T1w->T2w", "rows": rows, "ranking": rank})
    assert "| real input | sub-03 | no | +1.00 | **0.600 / 0.5** |" in text
    assert "contrast figure: ρ = -1.00" in text


def test_verdicts_read_a_sidecar_record() -> None:
    record = {"flagged": True, "distances": {"T1w": 0.4}, "threshold": 0.3, "reasons": ["x"],
              "disagreement": {"figure": 0.01, "threshold": 0.02, "flagged": False},
              "features": {"figure": None, "skipped": "no reference"},
              "contrast": {"figure": 0.9, "threshold": 0.5, "flagged": True}}
    found = verdicts(record)
    assert found["histogram"] == {"figure": 0.4, "threshold": 0.3, "warns": True,
                                  "reasons": ["x"]}
    assert found["features"]["figure"] is None and not found["features"]["warns"]
    assert found["contrast"]["warns"] and not found["disagreement"]["warns"]
