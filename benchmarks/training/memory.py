"""Peak memory of a training run, measured over the whole process tree.

``python -m mri2mri.benchmarks.training.memory --label NAME --json OUT -- mri2mri-train ...``
runs the command and samples every 0.2 s, with psutil, the summed RSS and the summed
PSS (proportional set size: shared pages divided among the processes sharing them)
of the command and all its descendants (DataLoader workers, cache-building pool).
The summed RSS counts pages shared between a parent and its forked workers once per
process, so it over-states; PSS does not. Both peaks are reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mri2mri.runtime.atomic import write_json

INTERVAL = 0.2


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


def measure(command: list[str], log: Path | None = None, limit_gb: float | None = None
            ) -> dict[str, float]:
    """Run `command`; return its exit code, wall time and peak tree RSS / PSS (GB).

    With `limit_gb`, the whole tree is killed as soon as its summed RSS exceeds it
    (``killed_at_limit`` in the result): a safety net on a shared machine.
    """
    started = time.perf_counter()
    with open(log or "/dev/null", "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        peak_rss = peak_pss = 0
        most = 0
        killed = False
        while proc.poll() is None:
            tree = _tree(root)
            rss, pss = _usage(tree)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            most = max(most, len(tree))
            if limit_gb is not None and rss > limit_gb * 1e9:
                _kill(tree)
                killed = True
            time.sleep(INTERVAL)
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - started,
            "peak_rss_gb": peak_rss / 1e9, "peak_pss_gb": peak_pss / 1e9,
            "max_processes": most, "killed_at_limit": killed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--json", type=Path, required=True, help="results file (appended)")
    parser.add_argument("--log", type=Path, help="the command's output")
    parser.add_argument("--limit-gb", type=float, help="kill the tree above this summed RSS")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    result = {"label": args.label, "command": command, **measure(command, args.log, args.limit_gb)}
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    rows.append(result)
    write_json(args.json, rows)
    print(json.dumps(result))
    sys.exit(result["returncode"])


if __name__ == "__main__":
    main()
