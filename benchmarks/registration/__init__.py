"""Registration benchmark: does registering through a synthesized image beat direct registration?

`run_registration_benchmark` is what `mri2mri-bench registration` calls; the
parts (protocols, stats, methods, runner, report) are usable on their own. The
simulated motions and the error metrics live with registration itself
(`mri2mri.benchmarks.registration.motion` and `.metrics`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from .report import plot, summarise, write_csv, write_markdown, write_summary
from .runner import BenchmarkConfig, run_benchmark

RESULTS_CSV, SUMMARY_JSON, FIGURE_PNG = "results.csv", "summary.json", "registration.png"
REPORT_MD = "report.md"


def run_registration_benchmark(config: BenchmarkConfig, out_dir: str | Path, *, jobs: int = 1,
                               scheduler: str | None = None,
                               progress: Callable[[str, int, int], None] | None = None,
                               reports: bool = False) -> dict[str, object]:
    """Run (or resume) the benchmark; write results.csv, summary.json, report.md and the figure."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, info = run_benchmark(config, out_dir, jobs=jobs, scheduler=scheduler,
                               progress=progress, reports=reports)
    summary = summarise(rows, info, asdict(config))
    write_csv(rows, out_dir / RESULTS_CSV)
    write_summary(summary, out_dir / SUMMARY_JSON)
    write_markdown(summary, out_dir / REPORT_MD)
    plot(rows, out_dir / FIGURE_PNG,
         title=f"{config.moving_contrast} -> {config.static_contrast}, {config.settings} settings, "
               f"masks {config.masks}, {len(info['subjects'])} subjects")
    return summary


__all__ = ["BenchmarkConfig", "run_registration_benchmark", "run_benchmark"]
