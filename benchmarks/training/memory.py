"""Peak memory of a training run, measured over the whole process tree.

``mri2mri-bench training-memory --label NAME --json OUT -- mri2mri-train ...`` runs
the command and samples every 0.2 s, with psutil, the summed RSS and the summed PSS
(proportional set size: shared pages divided among the processes sharing them) of
the command and all its descendants (DataLoader workers, cache-building pool).
The summed RSS counts pages shared between a parent and its forked workers once per
process, so it over-states; PSS does not. Both peaks are reported, with the time of
the RSS peak and the last line the command had printed then (which phase it was in);
``--timeline`` keeps every sample.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mri2mri.runtime.core.atomic import atomic_path
from mri2mri.runtime.core.errors import InputError

INTERVAL = 0.2
TIMELINE_COLUMNS = ("seconds", "rss_gb", "pss_gb", "processes", "last_line")


@dataclass(frozen=True)
class Sample:
    """One reading of the tree: when, how much, how many processes, in which phase."""

    seconds: float
    rss_gb: float
    pss_gb: float
    processes: int
    last_line: str


class LastLine:
    """The last non-empty line written so far to a log that another process is writing.

    Reads only what was appended since the previous call. Lines end at ``\\n`` or
    ``\\r`` (progress bars redraw with ``\\r``); an unterminated tail waits for its end.
    """

    _END = re.compile(rb"[\r\n]")

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close(), read incrementally
        self._pending = b""
        self.line = ""

    def update(self, *, final: bool = False) -> str:
        """Read what was appended; `final`: the writer is done, so the tail is a line too."""
        self._pending += self._file.read()
        *complete, self._pending = self._END.split(self._pending)
        if final:
            complete, self._pending = [*complete, self._pending], b""
        for raw in reversed(complete):
            if text := raw.decode("utf-8", errors="replace").strip():
                self.line = text
                break
        return self.line

    def close(self) -> None:
        self._file.close()


def _tree(root: psutil.Process) -> list[psutil.Process]:
    try:
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _usage(processes: list[psutil.Process]) -> tuple[int, int]:
    rss = pss = 0
    for p in processes:
        try:
            info = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


def _kill(processes: list[psutil.Process]) -> None:
    for p in reversed(processes):
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def write_timeline(path: Path, samples: list[Sample]) -> None:
    """One CSV row per sample (TIMELINE_COLUMNS), written atomically."""
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(TIMELINE_COLUMNS)
        for s in samples:
            writer.writerow([f"{s.seconds:.2f}", f"{s.rss_gb:.4f}", f"{s.pss_gb:.4f}",
                             s.processes, s.last_line])


def _sample_until_exit(proc: subprocess.Popen, log: Path, limit_gb: float | None,
                       started: float) -> tuple[list[Sample], bool]:
    root = psutil.Process(proc.pid)
    tail = LastLine(log)
    samples: list[Sample] = []
    killed = False
    try:
        while proc.poll() is None:
            tree = _tree(root)
            rss, pss = _usage(tree)
            seconds = time.perf_counter() - started
            # The log is read after the memory, so a line printed before a phase's
            # allocations is always the one recorded with them.
            samples.append(Sample(seconds, rss / 1e9, pss / 1e9, len(tree), tail.update()))
            if limit_gb is not None and rss > limit_gb * 1e9:
                _kill(tree)
                killed = True
            time.sleep(INTERVAL)
        proc.wait()
    finally:
        tail.close()
    return samples, killed


def measure(command: list[str], log: Path | None = None, limit_gb: float | None = None,
            timeline: Path | None = None) -> dict:
    """Run `command`; return its exit code, wall time and peak tree RSS / PSS (GB).

    The command's stdout and stderr go to `log` (a temporary file when None), with
    ``PYTHONUNBUFFERED=1`` so that a Python command's lines reach it as printed.
    ``peak_at_seconds`` and ``peak_during`` say when the RSS peak happened and the
    last line printed by then. With `limit_gb`, the whole tree is killed as soon as
    its summed RSS exceeds it (``killed_at_limit``): a safety net on a shared machine.
    `timeline` receives every sample as CSV (`write_timeline`).
    """
    if not command:
        raise InputError(None, "no command to measure: give it after --")
    env = {"PYTHONUNBUFFERED": "1", **os.environ}
    with tempfile.TemporaryDirectory(prefix="mri2mri-memory-") as scratch:
        log_path = log if log is not None else Path(scratch) / "output.log"
        started = time.perf_counter()
        with open(log_path, "wb") as out:
            try:
                proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
            except (FileNotFoundError, PermissionError) as exc:
                raise InputError(command[0], f"cannot run the command ({exc.strerror})"
                                 ) from None
            samples, killed = _sample_until_exit(proc, log_path, limit_gb, started)
        seconds = time.perf_counter() - started
    if timeline is not None:
        write_timeline(timeline, samples)
    none = Sample(0.0, 0.0, 0.0, 0, "")
    peak = max(samples, key=lambda s: s.rss_gb, default=none)  # the first sample at the peak
    return {"returncode": proc.returncode, "seconds": seconds, "peak_rss_gb": peak.rss_gb,
            "peak_pss_gb": max(samples, key=lambda s: s.pss_gb, default=none).pss_gb,
            "peak_at_seconds": peak.seconds, "peak_during": peak.last_line,
            "max_processes": max((s.processes for s in samples), default=0),
            "samples": len(samples), "killed_at_limit": killed}
