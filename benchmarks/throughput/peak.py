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


def gemm_gflops(threads: int, n: int = 2048, repeats: int = 5, device: str = "cpu"
                ) -> dict[str, float]:
    """Median GFLOP/s of an n x n float32 matrix product per library, and their maximum."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    work = 2.0 * n ** 3
    result: dict[str, float] = {}
    if device == "cpu":
        with threadpool_limits(limits=threads):
            result["numpy"] = work / _median_seconds(lambda: a @ b, repeats) / 1e9
    ta, tb = torch.from_numpy(a).to(device), torch.from_numpy(b).to(device)
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
