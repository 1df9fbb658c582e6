"""The one process-pool helper (runtime/parallel.py): workers never forked from the caller."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.parallel import map_jobs, process_pool, start_method

#: Held by the test process while a worker runs: a forked worker would inherit it held.
LOCK = threading.Lock()


def _worker() -> tuple[bool, int]:
    acquired = LOCK.acquire(timeout=5)
    return acquired, os.getpid()


def test_workers_do_not_inherit_the_callers_held_locks() -> None:
    assert start_method() in multiprocessing.get_all_start_methods()
    if "forkserver" in multiprocessing.get_all_start_methods():
        assert start_method() == "forkserver"
    with LOCK, process_pool(2) as pool:
        results = [f.result(timeout=120) for f in [pool.submit(_worker) for _ in range(2)]]
    assert all(acquired for acquired, _ in results), "a worker saw the caller's lock held"
    assert all(pid != os.getpid() for _, pid in results)


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        process_pool(0)


def _fails(path: str) -> None:
    raise InputError(path, "cannot be read")


def test_an_input_error_in_a_worker_arrives_whole() -> None:
    with process_pool(1) as pool, pytest.raises(InputError) as caught:
        pool.submit(_fails, "/data/sub-01_T1w.nii.gz").result(timeout=120)
    assert str(caught.value) == "/data/sub-01_T1w.nii.gz: cannot be read"
    assert caught.value.path == Path("/data/sub-01_T1w.nii.gz")
    assert caught.value.problem == "cannot be read"


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


@pytest.mark.parametrize("jobs", [1, 2])
def test_map_jobs_keeps_task_order_and_reports_progress(jobs: int) -> None:
    seen: list[tuple[int, int]] = []
    results = map_jobs(_square_and_pid, [3, 1, 2], jobs, lambda d, t: seen.append((d, t)))
    assert [r for r, _ in results] == [9, 1, 4]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    in_caller = all(pid == os.getpid() for _, pid in results)
    assert in_caller == (jobs == 1)
