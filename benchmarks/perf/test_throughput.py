"""Synthesis throughput, same weights: PyTorch eager vs onnxruntime (CPU; GPU when present).

Every configuration of the grid is a pytest-benchmark test: preset x batch size
x threads (1..physical cores) x engine. PyTorch and onnxruntime of one
configuration run back to back so load changes on a shared machine hit both
alike; RESULTS.md reports their ratio. Each onnxruntime result is also checked
against PyTorch's output on the same batch (1e-4). GPU configurations (CUDA,
TensorRT fp32/fp16, PyTorch CUDA) are skipped with the reason when no GPU works.
"""

from __future__ import annotations

import numpy as np
import pytest

from mri2mri.benchmarks.throughput.engines import OrtEngine, TorchEngine, gpu_skip_reason
from mri2mri.benchmarks.throughput.flops import flops_per_slice
from mri2mri.benchmarks.throughput.models import PRESETS, SLICE_SIZE, synthetic_slices
from mri2mri.runtime.engine.providers import CUDA, TENSORRT
from mri2mri.runtime.engine.session import physical_cores

TOLERANCE = 1e-4
#: GPU rows against PyTorch on the CPU. CUDA runs fp32 with TF32 off (1e-4 expected);
#: TensorRT builds fp32 engines with TF32 kernels (its default, no switch in onnxruntime).
TOLERANCE_GPU_FP32 = 1e-3
TOLERANCE_FP16 = 1e-2
BATCHES = (1, 8, 32)
THREADS = tuple(range(1, physical_cores() + 1))
#: Timed rounds per configuration: a batch of 32 reference slices takes seconds, so fewer.
ROUNDS = {1: 3, 8: 3, 32: 2}
WARMUP = {1: 1, 8: 1, 32: 0}
GPU_CONFIGS = [("onnxruntime-cuda", "fp32", CUDA), ("onnxruntime-cuda", "fp16", CUDA),
               ("onnxruntime-tensorrt", "fp32", TENSORRT),
               ("onnxruntime-tensorrt", "fp16", TENSORRT), ("pytorch-cuda", "fp32", "torch-cuda")]

_reference_outputs: dict[tuple[str, int], np.ndarray] = {}


def _info(model, engine: str, device: str, precision: str, batch: int, threads: int) -> dict:
    return {"engine": engine, "device": device, "precision": precision, "preset": model.preset,
            "batch_size": batch, "threads": threads, "slice_size": SLICE_SIZE,
            "flops_per_slice": flops_per_slice(model.onnx_path, 1, SLICE_SIZE, SLICE_SIZE)}


def _torch_output(model, batch: np.ndarray, threads: int) -> np.ndarray:
    key = (model.preset, len(batch))
    if key not in _reference_outputs:
        _reference_outputs[key] = TorchEngine(model.torch_model, threads).run(batch)
    return _reference_outputs[key]


@pytest.mark.parametrize("engine", ["pytorch", "onnxruntime"])
@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("preset", PRESETS)
def test_cpu_throughput(benchmark, bench_models, gemm_peak, preset: str, batch_size: int,
                        threads: int, engine: str) -> None:
    model = bench_models(preset)
    batch = synthetic_slices(batch_size, seed=3)
    if engine == "pytorch":
        runner = TorchEngine(model.torch_model, threads)
    else:
        runner = OrtEngine(model.onnx_path, threads, batch_size)
    benchmark.group = f"{preset} batch {batch_size}"
    benchmark.extra_info.update(_info(model, engine, "cpu", "fp32", batch_size, threads))
    out = benchmark.pedantic(runner.run, args=(batch,), rounds=ROUNDS[batch_size],
                             iterations=1, warmup_rounds=WARMUP[batch_size])
    assert out.shape == (batch_size, 1, SLICE_SIZE, SLICE_SIZE)
    if engine == "pytorch":
        _reference_outputs[(preset, batch_size)] = out
    else:
        diff = float(np.max(np.abs(out.astype(np.float64) - _torch_output(model, batch,
                                                                          threads))))
        benchmark.extra_info["max_abs_diff"] = diff
        assert diff <= TOLERANCE, f"onnxruntime differs from PyTorch by {diff:.2e}"


@pytest.mark.parametrize("config", GPU_CONFIGS, ids=lambda c: f"{c[0]}-{c[1]}")
@pytest.mark.parametrize("batch_size", BATCHES)
@pytest.mark.parametrize("preset", PRESETS)
def test_gpu_throughput(benchmark, bench_models, bench_workdir, gemm_peak, trt_cache,
                        preset: str, batch_size: int, config: tuple[str, str, str]) -> None:
    """A GPU row: the runtime's Synthesizer on CUDA or TensorRT (or PyTorch on CUDA).

    Engine build (TensorRT, empty cache) or first-batch set-up (CUDA) is timed
    apart (``setup_s``); the benchmark itself is the steady state after it.
    """
    engine, precision, provider = config
    model = bench_models(preset)
    reason = gpu_skip_reason(provider, model.onnx_path)
    if reason is not None:
        pytest.skip(f"{engine} {precision}: {reason}")
    batch = synthetic_slices(batch_size, seed=3)
    setup = 0.0
    if provider == "torch-cuda":
        runner = TorchEngine(model.torch_model, 1, device="cuda")
    else:
        path = model.onnx_path
        if precision == "fp16":
            from mri2mri.export.onnx_export import export_checkpoint

            path = bench_workdir / preset / f"{model.checkpoint.stem}-fp16.onnx"
            if not path.exists():
                export_checkpoint(model.checkpoint, path, fp16=True)
        runner = OrtEngine(path, 1, batch_size, provider=provider, trt_cache=trt_cache)
        setup = runner.prepare(SLICE_SIZE, SLICE_SIZE)
        assert runner.synth is not None and runner.synth.provider == provider
    benchmark.group = f"{preset} batch {batch_size}"
    benchmark.extra_info.update(_info(model, engine, "cuda", precision, batch_size, 1))
    benchmark.extra_info["setup_s"] = setup
    out = benchmark.pedantic(runner.run, args=(batch,), rounds=5, iterations=1,
                             warmup_rounds=2)
    reference = _torch_output(model, batch, physical_cores())
    diff = float(np.max(np.abs(out.astype(np.float64) - reference)))
    benchmark.extra_info["max_abs_diff"] = diff
    assert diff <= (TOLERANCE_FP16 if precision == "fp16" else TOLERANCE_GPU_FP32)
    model.torch_model.to("cpu")  # TorchEngine(device="cuda") moved the shared module
