"""The CI throughput gate as a pytest test (`bash benchmarks/ci_gate.sh` runs the same).

Not a pytest-benchmark test: `--benchmark-only` skips it. Set MRI2MRI_ORT_OPT=disable
or =untuned to watch it run onnxruntime with deliberately slow settings.
"""

from __future__ import annotations

import os
from pathlib import Path

from mri2mri.benchmarks.throughput.gate import run_gate


def test_throughput_gate(tmp_path: Path) -> None:
    result = run_gate(tmp_path, optimisation=os.environ.get("MRI2MRI_ORT_OPT", "runtime"))
    print(result.message())
    assert result.passed, result.message()
