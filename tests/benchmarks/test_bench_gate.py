"""The CI throughput gate's decision logic (pure functions; nothing is timed here)."""

from __future__ import annotations

import math

import pytest

from mri2mri.benchmarks.throughput.gate import (
    THRESHOLD,
    TOLERANCE,
    GateResult,
    gate_passes,
    main,
    speed_ratio,
)


def test_ratio_is_median_over_median() -> None:
    # PyTorch median 3.0 s, onnxruntime median 1.0 s: 3x; the outlier 9.0 s is ignored.
    assert speed_ratio([2.0, 3.0, 9.0], [1.0, 0.9, 1.1]) == pytest.approx(3.0)
    assert speed_ratio([1.0], [2.0]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        speed_ratio([], [1.0])


def test_gate_passes_at_and_above_threshold_only() -> None:
    assert gate_passes(THRESHOLD, THRESHOLD)
    assert gate_passes(2.5, 1.8)
    assert not gate_passes(1.79, 1.8)
    assert not gate_passes(math.nan, 1.8)
    with pytest.raises(ValueError):
        gate_passes(2.0, 0.0)


def test_gate_fails_when_outputs_differ() -> None:
    assert gate_passes(3.0, 1.8, max_abs_diff=TOLERANCE)
    assert not gate_passes(3.0, 1.8, max_abs_diff=10 * TOLERANCE)
    assert not gate_passes(3.0, 1.8, max_abs_diff=math.nan)


def test_result_reports_its_verdict() -> None:
    slow = GateResult(ratio=1.2, threshold=1.8, max_abs_diff=1e-7,
                      torch_seconds=[2.4, 2.5], ort_seconds=[2.0, 2.1])
    fast = GateResult(ratio=2.6, threshold=1.8, max_abs_diff=1e-7)
    assert not slow.passed and "FAIL" in slow.message() and "1.20x" in slow.message()
    assert fast.passed and "PASS" in fast.message()


def test_gate_cli_rejects_bad_settings_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The typer command (benchmarks/ci_gate.sh) fails before building any model."""
    monkeypatch.setenv("MRI2MRI_ORT_OPT", "fastest")
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 1
    assert capsys.readouterr().err.strip() == ("error: MRI2MRI_ORT_OPT must be runtime, "
                                               "disable, untuned, not 'fastest'")
    monkeypatch.delenv("MRI2MRI_ORT_OPT")
    with pytest.raises(SystemExit) as info:
        main(["--repeats", "0"])
    assert info.value.code == 1 and "--repeats" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--batch-size", "eight"])
    assert info.value.code == 2  # a usage error, reported by typer
