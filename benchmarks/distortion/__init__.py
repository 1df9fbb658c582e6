"""`mri2mri-bench distortion`: susceptibility distortion correction against a known field.

Modules: `truth` (the field and the undistorted b=0 a simulated cohort was made with,
regenerated), `methods` (no correction, rigid, affine, SyN-SDC-like, ours, the true-b=0
reference), `metrics` (sample-position errors along the phase-encoding axis, brain
boundary, level-free image similarity), `runner` (per subject, cached), `report`
(summary.json, results.csv, table.md, paired tests, issue 32's targets).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from mri2mri.runtime.core.errors import InputError


def run_distortion_benchmark(data: str | Path, out: str | Path, *, model: str | None = None,
                             source: str | Path | None = None,
                             subjects: Sequence[str] | None = None, ants: bool = True,
                             progress: Callable[[str], None] = lambda _m: None) -> dict:
    """Run (or resume) the benchmark and write its outputs; returns the summary."""
    from . import methods
    from .report import write_outputs
    from .runner import DistortionConfig, run_benchmark
    from .truth import kind_of

    out = Path(out)
    kind_of(Path(data))  # a cohort whose truth can be remade, or a one-line error first
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    chosen = [m for m in methods.METHODS if (ants or m != methods.SYN_SDC)
              and (model is not None or m != methods.OURS)]
    if model is None:
        progress("note: no --model: the 'ours' method and the no-harm check are skipped")
    config = DistortionConfig(data=str(data), model=model,
                              source=None if source is None else str(source),
                              methods=chosen, subjects=list(subjects) if subjects else None)
    notes: list[str] = []

    def say(message: str) -> None:
        progress(message)
        if message.startswith("note:"):
            notes.append(message)

    started = time.perf_counter()
    rows = run_benchmark(config, out, say)
    return write_outputs(rows, out, config=asdict(config),
                         seconds=time.perf_counter() - started, notes=notes)
