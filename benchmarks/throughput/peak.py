"""The machine's attainable float32 GFLOP/s, measured in the same run as the benchmarks.

A large square matrix product is the best case for a CPU (or GPU): the reported
fraction "achieved / peak" tells how close each inference path runs to the
machine's limit *as loaded at that moment*, which a datasheet number cannot.
Both NumPy's BLAS and PyTorch's are tried; the faster one is the peak.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: thread pools, page faults
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_gflops(threads: int, *, n: int = 2048, repeats: int = 5, device: str = "cpu",
                dtype: str = "float32") -> dict[str, float]:
    """Median GFLOP/s of an n x n matrix product per library, and their maximum.

    On a GPU (``device="cuda"``) only PyTorch runs; float32 there is true fp32
    (PyTorch's TF32 for matmul is off by default, as in the runtime's CUDA sessions).
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    work = 2.0 * n ** 3
    result: dict[str, float] = {}
    if device == "cpu":
        with threadpool_limits(limits=threads):
            result["numpy"] = work / _median_seconds(lambda: a @ b, repeats) / 1e9
    kind = getattr(torch, dtype)
    ta, tb = (torch.from_numpy(m).to(device=device, dtype=kind) for m in (a, b))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)

    def product() -> None:
        ta @ tb
        if device != "cpu":
            torch.cuda.synchronize()

    try:
        result["torch"] = work / _median_seconds(product, repeats) / 1e9
    finally:
        torch.set_num_threads(previous)
    result["peak"] = max(result.values())
    return result
