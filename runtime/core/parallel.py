"""The one way mri2mri starts worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def start_method() -> str:
    """``forkserver`` where the platform has it (Linux, macOS), else ``spawn`` (Windows)."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def process_pool(jobs: int, initializer: Callable[..., object] | None = None,
                 initargs: tuple[object, ...] = ()) -> ProcessPoolExecutor:
    """A pool of `jobs` worker processes that never are forked from the calling process.

    Why not ``fork`` (Linux's default before Python 3.14): a forked child gets a copy
    of every lock of the parent but only the thread that forked. A caller that holds
    onnxruntime or torch (OpenMP/intra-op thread pools) or a live progress bar's
    refresh thread can have a lock taken at the instant of the fork, and the child
    then deadlocks on it, at random. ``forkserver`` forks each worker from a small
    server process started afresh (no threads, no loaded libraries), which is as safe
    as ``spawn`` and starts workers faster; ``spawn`` is the fallback where there is
    no forkserver. Either way the work function and its arguments must be picklable
    (module-level functions, no lambdas). `initializer(*initargs)` runs once in each
    worker (e.g. to load a model once per process).
    """
    if jobs < 1:
        raise ValueError(f"a process pool needs at least 1 worker, got {jobs}")
    return ProcessPoolExecutor(max_workers=jobs,
                               mp_context=multiprocessing.get_context(start_method()),
                               initializer=initializer, initargs=initargs)


def map_jobs(function: Callable[[T], R], tasks: Sequence[T], jobs: int = 1,
             progress: Callable[[int, int], None] | None = None) -> list[R]:
    """`function` over `tasks` in order, in `jobs` worker processes (1: in this process).

    `progress(done, total)` is called after each task, in task order.
    """
    results: list[R] = []
    if jobs > 1 and len(tasks) > 1:
        with process_pool(min(jobs, len(tasks))) as pool:
            for result in pool.map(function, tasks):
                results.append(result)
                if progress:
                    progress(len(results), len(tasks))
        return results
    for task in tasks:
        results.append(function(task))
        if progress:
            progress(len(results), len(tasks))
    return results
