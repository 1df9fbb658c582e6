"""The one way mri2mri starts worker processes."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor


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
