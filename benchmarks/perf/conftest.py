"""Benchmark session set-up: shared models, the GEMM peak, the JSON and RESULTS.md.

Without ``--benchmark-json`` the JSON goes to ``benchmarks/results/throughput.json``;
`RESULTS.md` and `throughput.png` are written from the same data at the end of the run
(`mri2mri.benchmarks.throughput.report`). Set ``MRI2MRI_BENCH_CHECKPOINT=path.pt`` to
benchmark a trained checkpoint instead of the seeded weights (its preset is used).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

#: benchmarks/: the results live beside the package; this suite (benchmarks/perf/, not
#: installed) is named test* so that `pytest benchmarks/` loads this file before configuring.
HERE = Path(__file__).resolve().parents[1]
DEFAULT_JSON = HERE / "results" / "throughput.json"
RESULTS_MD = HERE / "RESULTS.md"
CHART = HERE / "throughput.png"
#: Skipped configurations and the GEMM peak of this session (module state: one pytest run).
_SKIPPED: list[dict[str, str]] = []
_PEAKS: dict[str, dict[str, float]] = {}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if getattr(config.option, "benchmark_json", "absent") is None:
        DEFAULT_JSON.parent.mkdir(exist_ok=True)
        config.option.benchmark_json = DEFAULT_JSON


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Remember skipped configurations (GPU ones on a CPU machine) for RESULTS.md."""
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(
            report.longrepr)
        _SKIPPED.append({"test": report.nodeid, "reason": reason.removeprefix("Skipped: ")})


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    from mri2mri.benchmarks.throughput.machine import machine_info as describe

    machine_info["mri2mri"] = describe()
    machine_info["mri2mri"]["gemm_peak_gflops"] = dict(_PEAKS)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list,
                                 output_json: dict) -> None:
    from mri2mri.benchmarks.throughput.report import write_report

    output_json["skipped"] = list(_SKIPPED)
    write_report(output_json, RESULTS_MD, CHART)


@pytest.fixture(scope="session")
def bench_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("throughput")


@pytest.fixture(scope="session")
def bench_models(bench_workdir: Path):
    """preset -> BenchModel, exported once per session (lazily: only presets asked for)."""
    from mri2mri.benchmarks.throughput.models import prepare_model

    checkpoint = os.environ.get("MRI2MRI_BENCH_CHECKPOINT")
    cache: dict = {}

    def get(preset: str):
        if preset not in cache:
            ckpt = Path(checkpoint) if checkpoint else None
            cache[preset] = prepare_model(preset, bench_workdir / preset, ckpt)
        return cache[preset]

    return get


@pytest.fixture(scope="session")
def gemm_peak() -> dict:
    """threads -> GEMM GFLOP/s on this machine, measured once at the start of the session.

    With a CUDA GPU visible to PyTorch, also ``cuda-fp32`` and ``cuda-fp16``: the
    GPU's measured matmul peak, against which the GPU rows are set.
    """
    import torch

    from mri2mri.benchmarks.throughput.peak import gemm_gflops
    from mri2mri.runtime.engine.session import physical_cores

    _PEAKS.update({str(t): gemm_gflops(t) for t in range(1, physical_cores() + 1)})
    if torch.cuda.is_available():
        for dtype in ("float32", "float16"):
            _PEAKS[f"cuda-fp{dtype[-2:]}"] = gemm_gflops(1, n=8192, repeats=10, device="cuda",
                                                             dtype=dtype)
    return _PEAKS


@pytest.fixture(scope="session")
def trt_cache(bench_workdir: Path) -> Path:
    """An empty TensorRT engine cache: the first build of each engine is measured."""
    return bench_workdir / "tensorrt-cache"
