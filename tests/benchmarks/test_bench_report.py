"""RESULTS.md rendering of GPU rows: steady state, set-up (engine build) apart, share of peak."""

from __future__ import annotations

from mri2mri.benchmarks.throughput.report import render_markdown


def _bench(engine: str, device: str, precision: str, median: float, **extra) -> dict:
    info = {"engine": engine, "device": device, "precision": precision, "preset": "reference",
            "batch_size": 32, "threads": 1, "slice_size": 256, "flops_per_slice": 11.9e9,
            **extra}
    return {"stats": {"median": median}, "extra_info": info}


def test_gpu_rows_report_setup_and_share_of_gpu_peak() -> None:
    data = {"machine_info": {"mri2mri": {"gemm_peak_gflops": {
                "1": {"peak": 100.0, "numpy": 100.0, "torch": 90.0},
                "cuda-fp16": {"peak": 476_000.0, "torch": 476_000.0}}}},
            "benchmarks": [_bench("onnxruntime-tensorrt", "cuda", "fp16", 0.016, setup_s=95.2,
                                  max_abs_diff=3e-3),
                           _bench("onnxruntime-cuda", "cuda", "fp32", 0.1, setup_s=1.5,
                                  max_abs_diff=2e-5)]}
    text = render_markdown(data)
    # 32 slices in 16 ms: 2000 slices/s, 23800 GFLOP/s = 5 % of the 476 TFLOP/s fp16 peak.
    assert ("| reference | 32 | onnxruntime-tensorrt | fp16 | 2000.0 | 23800 | 5 % | 95.2 | "
            "3.0e-03 |") in text
    # No fp32 GPU peak measured: the share is not made up.
    assert "| onnxruntime-cuda | fp32 | 320.0 | 3808 | n/a | 1.5 | 2.0e-05 |" in text
    assert "GPU matmul peak (cuda-fp16, PyTorch, 8192x8192): 476000 GFLOP/s" in text


def test_end_to_end_rows_name_the_device() -> None:
    stages = {"load": 0.1, "preprocess": 0.8, "inference": 0.2, "postprocess": 0.1,
              "write": 1.0, "total": 2.2}
    data = {"benchmarks": [{"stats": {"median": 3.5}, "extra_info": {
        "preset": "small", "device": "tensorrt", "shape": [256, 256, 150], "stages": stages}}]}
    assert ("| small | tensorrt | 3.5 | 0.10 | 0.80 | 0.00 | 0.20 | 0.10 | 1.00 | 2.20 |"
            in render_markdown(data))
