"""`mri2mri-bench`: the project's benchmarks, one sub-command each (more can be added)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from mri2mri.benchmarks.registration.motion import (
    DEFAULT_MAX_ROTATION_DEG,
    DEFAULT_MAX_TRANSLATION_MM,
)
from mri2mri.runtime.core.cli_common import run_app

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="mri2mri benchmarks (reproducible, resumable).")
_err = Console(stderr=True, highlight=False)


@app.callback()
def _root() -> None:
    """mri2mri benchmarks: pick a sub-command."""


@app.command()
def registration(
    *,
    data: Annotated[Path, typer.Option(help="BIDS-like cohort (demo, IXI import, ...).")],
    out: Annotated[Path, typer.Option(help="Output directory (results.csv, summary.json, "
                                           "report.md, registration.png, cache/).")],
    model: Annotated[Path | None, typer.Option(help="ONNX model static contrast -> moving "
                                                    "contrast, for the 'via' method.")] = None,
    split: Annotated[str, typer.Option(help="train, validation, test or all.")] = "test",
    split_seed: Annotated[int, typer.Option(help="Seed of the subject split (as in "
                                                 "mri2mri-train).")] = 0,
    jobs: Annotated[int, typer.Option(help="Worker processes (subjects in parallel).")] = 1,
    scheduler: Annotated[str | None, typer.Option(help="Address of a running Dask scheduler "
                                                       "(instead of --jobs).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the simulated head motions.")] = 0,
    settings: Annotated[str, typer.Option(help="DIPY settings: fast or study.")] = "fast",
    moving_contrast: Annotated[str, typer.Option(help="Contrast registered (moving).")] = "T1w",
    static_contrast: Annotated[str, typer.Option(help="Contrast that is moved (static).")]
    = "b0",
    max_rotation: Annotated[float, typer.Option(help="Largest rotation about each axis "
                                                     "(degrees).")] = DEFAULT_MAX_ROTATION_DEG,
    max_translation: Annotated[float, typer.Option(help="Largest translation along each axis "
                                                        "(mm).")] = DEFAULT_MAX_TRANSLATION_MM,
    ants: Annotated[bool, typer.Option(help="Include the ANTs baseline when antspyx is "
                                            "installed.")] = True,
    reports: Annotated[bool, typer.Option("--reports", help="Write an HTML QC page per "
                                                            "subject and method (OUT/reports/)."
                                          )] = False,
    device: Annotated[str, typer.Option(help="Where the 'via' model runs: cpu (default), "
                                             "auto, tensorrt or cuda.")] = "cpu",
    masks: Annotated[str, typer.Option(help="DIPY methods' masks: none, or brain (static: "
                                            "median_otsu of the b=0 / synthesized image; "
                                            "moving: its foreground).")] = "none",
) -> None:
    """Known motions, three methods (DIPY direct, DIPY via synthesis, ANTs), two protocols."""
    from mri2mri.runtime.core.errors import InputError
    from mri2mri.runtime.engine.devices import check_device

    device = check_device(device)

    from .registration import run_registration_benchmark
    from .registration.methods import ANTS, DIRECT, VIA
    from .registration.runner import BenchmarkConfig

    if jobs < 1:
        raise InputError(None, "--jobs must be at least 1")
    if model is not None and not model.is_file():
        raise InputError(model, "model file not found")
    methods = [DIRECT] + ([VIA] if model is not None else []) + ([ANTS] if ants else [])
    if model is None:
        _err.print("note: no --model given: the 'via' method is skipped")
    try:
        config = BenchmarkConfig(
            data=str(data), model=None if model is None else str(model), split=split,
            split_seed=split_seed, seed=seed, settings=settings,
            moving_contrast=moving_contrast, static_contrast=static_contrast,
            max_rotation_deg=max_rotation, max_translation_mm=max_translation, methods=methods,
            device=device, masks=masks)
    except ValueError as exc:
        raise InputError(None, str(exc)) from None
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    summary = run_registration_benchmark(
        config, out, jobs=jobs, scheduler=scheduler, reports=reports,
        progress=lambda subject, done, total: _err.print(f"[{done}/{total}] {subject}"))
    for note in summary["notes"]:
        _err.print(f"note: {note}")
    typer.echo("\n".join(_registration_lines(summary)))
    typer.echo(f"wrote {out}/results.csv, summary.json, report.md, registration.png "
               f"({summary['wall_seconds']:.0f} s)")


def _registration_lines(summary: dict) -> list[str]:
    """The registration benchmark's summary: errors per protocol and method, then the tests."""
    lines = []
    for protocol, methods_stats in summary["results"].items():
        for method, stats in methods_stats.items():
            lines.append(f"{protocol:12s} {method:12s} translation "
                         f"{stats['translation_mae_mm']['mean']:.3f} mm  rotation "
                         f"{stats['rotation_mae_rad']['mean']:.4f} rad  boundary "
                         f"{stats['boundary_error_mm']['mean']:.3f} mm  "
                         f"{stats['seconds']['mean']:.1f} s/registration")
    for protocol, comparisons in summary["tests"].items():
        for name, entry in comparisons.items():
            t = entry.get("translation_mae_mm", {})
            if t:
                lines.append(f"{protocol:12s} {name}: translation ratio "
                             f"{t['ratio_of_means']:.2f} [{t['ratio_ci_low']:.2f}, "
                             f"{t['ratio_ci_high']:.2f}], Wilcoxon p={t['wilcoxon_p']:.3g}, "
                             f"Mann-Whitney p={t['mann_whitney_p']:.3g}")
    return lines


def _named_dirs(items: list[str], form: str) -> dict[str, Path]:
    """NAME=DIR options as {name: existing directory}; a one-line error for anything else."""
    from mri2mri.runtime.core.errors import InputError

    named: dict[str, Path] = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not Path(folder).is_dir():
            raise InputError(item, f"expected {form} with an existing directory")
        named[name] = Path(folder)
    return named


@app.command("registration-table")
def registration_table(
    runs: Annotated[list[str], typer.Argument(help="NAME=DIR: a registration benchmark's "
                                                    "output folder (its summary.json).")],
    out: Annotated[Path | None, typer.Option(help="Also write the table to this file.")]
    = None,
) -> None:
    """Several registration benchmark runs side by side, from their summary.json files."""
    import json

    from mri2mri.runtime.core.atomic import atomic_path
    from mri2mri.runtime.core.errors import InputError

    from .registration.report import side_by_side

    summaries: dict[str, dict] = {}
    for name, folder in _named_dirs(runs, "NAME=DIR").items():
        path = folder / "summary.json"
        if not path.is_file():
            raise InputError(path, "not found: is DIR a registration benchmark's output?")
        try:
            summaries[name] = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not valid JSON ({exc})") from None
    table = side_by_side(summaries)
    if out is not None:
        with atomic_path(out, overwrite=True) as tmp:
            tmp.write_text(table)
    typer.echo(table)


@app.command("ood-threshold")
def ood_threshold(
    data: Annotated[Path, typer.Option(help="BIDS-like cohort with T1w, T2w and PDw (its "
                                            "train split is the reference).")],
    out: Annotated[Path, typer.Option(help="Output directory (ood_threshold.json).")],
) -> None:
    """Distances of held-out and wrong inputs from the training data: how the
    out-of-distribution threshold of mri2mri-run is chosen."""
    from mri2mri.runtime.core.atomic import write_json
    from mri2mri.runtime.core.errors import InputError

    from .ood.threshold import threshold_distances, threshold_table

    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    result = threshold_distances(data)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "ood_threshold.json", result)
    typer.echo(threshold_table(result))
    typer.echo(f"wrote {out / 'ood_threshold.json'}")


@app.command("ood-calibration")
def ood_calibration(
    *,
    model: Annotated[str, typer.Option(help="ONNX model file or starter name.")],
    real: Annotated[Path, typer.Option(help="Real scans (sub-*/anat/sub-*_<contrast>.nii.gz).")],
    out: Annotated[Path, typer.Option(help="Output directory (summary.json, table.md).")],
    zero_shot: Annotated[Path | None, typer.Option(
        "--zero-shot", help="A zero-shot summary.json of this model on --real: each real "
        "subject's level-free gain goes beside its figures.")] = None,
    dwi: Annotated[Path | None, typer.Option(help="Pseudo-DWI folder (sub-*/dwi): each "
                                                  "subject's b=0 mean given as the source.")]
    = None,
    threads: Annotated[int, typer.Option(help="onnxruntime threads (0: its default).")] = 0,
) -> None:
    """Every out-of-distribution check on real scans (beside their gains), wrong contrasts
    and inputs the simulator does not cover: does each warn where it should?"""
    from mri2mri.runtime.core.atomic import atomic_path, write_json

    from .ood.calibration import calibrate, table

    summary = calibrate(model, real, zero_shot=zero_shot, dwi=dwi, threads=threads or None)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "summary.json", summary)
    with atomic_path(out / "table.md", overwrite=True) as tmp:  # as every other table.md
        tmp.write_text(table(summary))
    typer.echo(table(summary))
    typer.echo(f"wrote {out / 'summary.json'}, {out / 'table.md'}")


@app.command()
def generalisation(
    *,
    out: Annotated[Path, typer.Option(help="Output directory (--run: scores.csv, summary.json, "
                                           "table.md, curves.png; --leave-one-out: folds/, "
                                           "results.csv, summary.json, table.md).")],
    run: Annotated[list[Path] | None, typer.Option("--run", help="Run directory with best.pt "
                                                   "(repeatable); name it RECIPE-sSEED to "
                                                   "group seeds.")] = None,
    cohort: Annotated[list[str] | None, typer.Option("--cohort", help="NAME=DIR: a cohort to "
                                                     "score every subject of (repeatable)."
                                                     )] = None,
    reference: Annotated[str | None, typer.Option(help="Recipe the others are compared with, "
                                                       "paired by seed.")] = None,
    metric: Annotated[str, typer.Option(help="psnr, ssim or mae for table.md.")] = "psnr",
    threads: Annotated[int, typer.Option(help="PyTorch CPU threads (0: default).")] = 0,
    leave_one_out: Annotated[Path | None, typer.Option(
        "--leave-one-out", help="BIDS cohort of real subjects: train on all but one, score "
                                "the one left out, for each (instead of --run/--cohort).")]
    = None,
    source: Annotated[str, typer.Option(help="--leave-one-out: source contrast.")] = "T1w",
    target: Annotated[str, typer.Option(help="--leave-one-out: target contrast.")] = "T2w",
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="--leave-one-out: KEY=VALUE, a TrainConfig field the recipe changes "
                      "from its default (repeatable).")] = None,
    zero_shot: Annotated[Path | None, typer.Option(
        help="--leave-one-out: a run directory (best.pt) trained elsewhere, scored on every "
             "subject.")] = None,
    seed: Annotated[int, typer.Option(help="--leave-one-out: training seed.")] = 0,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="--leave-one-out: render table.md and results.csv again from "
                              "OUT/summary.json.")] = False,
) -> None:
    """Cross-scanner evaluation: each run's best.pt and its LUT baseline on each cohort; or,
    with --leave-one-out, a network trained on the other subjects against their LUT."""
    from mri2mri.runtime.core.errors import InputError

    if leave_one_out is not None and (run or cohort):
        raise InputError(None, "--leave-one-out trains its own runs: give it without --run "
                               "and --cohort")
    if leave_one_out is None and (overrides or zero_shot is not None or report_only):
        raise InputError(None, "--set, --zero-shot and --report-only go with --leave-one-out")
    if leave_one_out is not None:
        _leave_one_out(leave_one_out, out, source=source, target=target,
                       overrides=overrides or [], zero_shot=zero_shot, seed=seed,
                       threads=threads, report_only=report_only)
    elif not run or not cohort:
        raise InputError(None, "give --run and --cohort (score runs on cohorts), or "
                               "--leave-one-out DIR")
    else:
        _cross_scanner(run, cohort, out, reference=reference, metric=metric, threads=threads)


def _cross_scanner(run: list[Path], cohort: list[str], out: Path, *, reference: str | None,
                   metric: str, threads: int) -> None:
    """`generalisation --run ... --cohort ...`: score runs on cohorts."""
    from mri2mri.runtime.core.atomic import atomic_path
    from mri2mri.runtime.core.errors import InputError

    from .generalisation import evaluate_runs
    from .generalisation.report import markdown_table, plot_curves

    cohorts = {name: str(path) for name, path
               in _named_dirs(cohort, "--cohort NAME=DIR").items()}
    for r in run:
        if not (r / "best.pt").is_file():
            raise InputError(r, "no best.pt in this run directory")
    if metric not in ("psnr", "ssim", "mae"):
        raise InputError(None, f"--metric {metric!r}: use psnr, ssim or mae")
    summary = evaluate_runs(run, cohorts, out, threads=threads,
                            progress=lambda what: _err.print(what))
    table = markdown_table(summary, list(cohorts), metric, reference)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(table)
    plot_curves(run, out / "curves.png")
    typer.echo(table)
    typer.echo(f"wrote {out}/scores.csv, summary.json, table.md, curves.png")


def _leave_one_out(data: Path, out: Path, *, source: str, target: str, overrides: list[str],
                   zero_shot: Path | None, seed: int, threads: int, report_only: bool) -> None:
    """`generalisation --leave-one-out DIR`: train on all subjects but one, for each."""
    from .generalisation.loo import leave_one_out, rerender
    from .generalisation.overrides import parse_overrides

    if report_only:
        typer.echo(rerender(out))
        typer.echo(f"wrote {out}/results.csv, table.md")
        return
    summary = leave_one_out(data, out, source=source, target=target,
                            overrides=parse_overrides(overrides), zero_shot=zero_shot,
                            seed=seed, threads=threads,
                            progress=lambda what: _err.print(what, markup=False))
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/results.csv, summary.json, table.md; folds in {out}/folds "
               f"({summary['wall_seconds']:.0f} s)")


@app.command()
def headroom(
    *,
    data: Annotated[Path, typer.Option(help="BIDS cohort of at least 3 subjects with both "
                                            "contrasts (one scanner each, ideally).")],
    out: Annotated[Path, typer.Option(help="Output directory (summary.json, table.md).")],
    source: Annotated[str, typer.Option(help="Source contrast.")] = "T1w",
    target: Annotated[str, typer.Option(help="Target contrast.")] = "T2w",
    normalisation: Annotated[str, typer.Option(help="percentile or median, as "
                                                    "mri2mri-train's option.")] = "percentile",
    seed: Annotated[int, typer.Option(help="Seed of the trees' sampling.")] = 0,
) -> None:
    """What any model could gain over the LUT across scanners, without training a network:
    leaving each subject out, the others' LUT, the subject's own LUT (the ceiling of any
    per-intensity map) and gradient-boosted trees on intensity and spatial context."""
    from mri2mri.runtime.core.errors import InputError

    from .generalisation.headroom import headroom as measure

    if normalisation not in ("percentile", "median"):
        raise InputError(None, f"--normalisation {normalisation!r}: use percentile or median")
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    summary = measure(data, out, source=source, target=target, normalisation=normalisation,
                      seed=seed, progress=lambda what: _err.print(what, markup=False))
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/summary.json, table.md ({summary['wall_seconds']:.0f} s)")


@app.command("zero-shot")
def zero_shot(
    *,
    model: Annotated[str, typer.Option(help="ONNX model file (mri2mri-export's), or a "
                                            "starter model's name (mri2mri-run "
                                            "--list-models).", show_default=False)],
    real: Annotated[Path, typer.Option(help="BIDS-like folder of real subjects with both "
                                            "contrasts (at least 2), from scanners the model "
                                            "never saw.", show_default=False)],
    out: Annotated[Path, typer.Option(help="Output directory (summary.json, results.csv, "
                                           "table.md).", show_default=False)],
    source: Annotated[str, typer.Option(help="Source contrast (the model's input): T1w, "
                                             "T2w, PDw or b0 (the mean b=0 of the subject's "
                                             "DWI, scored on the other image's grid).")] = "T1w",
    target: Annotated[str, typer.Option(help="Target contrast (the model's output; the "
                                             "reverse pair works alike).")] = "T2w",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or tensorrt, as "
                                             "mri2mri-run.")] = "auto",
    threads: Annotated[int, typer.Option(help="CPU threads of onnxruntime (0: the physical "
                                              "cores).")] = 0,
) -> None:
    """Zero-shot synthesis on real scanners the model never saw, scored level-free (each
    image z-scored over the brain): the model against the LUT fitted on the other real
    subjects and the subject's own LUT (the per-intensity ceiling), with and without the
    T2w-bright lesion, beside the model's out-of-distribution figures.

    mri2mri-bench zero-shot --model MODEL.onnx --real DIR --out OUT [--source T2w --target
    T1w]; docs/training.md, "Zero-shot on real scanners, level-free"."""
    from mri2mri.runtime.core.errors import InputError

    from .generalisation.zero_shot import zero_shot as measure

    if threads < 0:
        raise InputError(None, f"--threads must be at least 0 (got {threads})")
    summary = measure(model, real, out, source=source, target=target, device=device,
                      threads=threads,
                      progress=lambda what: _err.print(what, markup=False, soft_wrap=True))
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/summary.json, results.csv, table.md "
               f"({summary['wall_seconds']:.0f} s)")


@app.command("training-memory", context_settings={"allow_interspersed_args": False})
def training_memory(
    *,
    label: Annotated[str, typer.Option(help="Name of this measurement in the results file.")],
    json_path: Annotated[Path, typer.Option("--json", help="Results file (a JSON list; the "
                                                           "result is appended).")],
    command: Annotated[list[str] | None, typer.Argument(
        metavar="-- COMMAND", help="The command to measure, after -- (its options are "
                                      "not read here).", show_default=False)] = None,
    log: Annotated[Path | None, typer.Option(help="File for the command's stdout and stderr "
                                                  "(default: a temporary file).")] = None,
    limit_gb: Annotated[float | None, typer.Option(help="Kill the whole tree above this "
                                                        "summed RSS (GB).")] = None,
    timeline: Annotated[Path | None, typer.Option(help="CSV, one row per 0.2 s sample: "
                                                       "seconds, rss_gb, pss_gb, processes, "
                                                       "last_line (the command's last "
                                                       "line printed by then).")] = None,
) -> None:
    """Peak memory (summed RSS and PSS) of a command and all its child processes."""
    import json

    from mri2mri.runtime.core.atomic import check_output_path, write_json
    from mri2mri.runtime.core.errors import InputError

    from .training.memory import measure

    if not command:
        raise InputError(None, "no command to measure: give it after --, e.g. "
                               "training-memory --label L --json OUT -- mri2mri-train ...")
    for path in (json_path, log, timeline):
        if path is not None:
            check_output_path(path, overwrite=True)
    try:
        rows = json.loads(json_path.read_text()) if json_path.exists() else []
    except json.JSONDecodeError as exc:
        raise InputError(json_path, f"not a JSON results file ({exc})") from None
    if not isinstance(rows, list):
        raise InputError(json_path, "not a JSON list of results")
    result = {"label": label, "command": command,
              **measure(command, log=log, limit_gb=limit_gb, timeline=timeline)}
    write_json(json_path, [*rows, result])
    typer.echo(json.dumps(result))
    code = result["returncode"]
    if code:  # a command killed by signal N exits 128 + N, as in a shell
        raise typer.Exit(code if code > 0 else 128 - code)


@app.command("training-loader")
def training_loader(
    *,
    data: Annotated[Path, typer.Option(help="BIDS-like cohort (T1w -> T2w, its train split).")],
    cache: Annotated[Path, typer.Option(help="Slice cache directory (built or reused).")],
    json_path: Annotated[Path, typer.Option("--json", help="Results file (JSON, replaced).")],
    device: Annotated[str, typer.Option(help="cpu, cuda or auto; on CUDA both presets in "
                                             "fp32 and mixed precision.")] = "cpu",
    batch: Annotated[int, typer.Option(help="Slices per step.")] = 8,
    steps: Annotated[int, typer.Option(help="Optimizer steps per timed pass.")] = 20,
    repeats: Annotated[int, typer.Option(help="Timed passes of each feed (alternated; the "
                                              "median is reported).")] = 3,
    workers: Annotated[str, typer.Option(help="DataLoader workers: a number or auto (as "
                                              "mri2mri-train).")] = "auto",
) -> None:
    """The loader's overhead: slices/s fed by the slice-cache loader / fed from memory."""
    import json

    from mri2mri.data.cohort import Cohort
    from mri2mri.runtime.core.atomic import check_output_path, write_json
    from mri2mri.runtime.core.errors import InputError

    Cohort.discover(data)
    check_output_path(json_path, overwrite=True)
    if workers != "auto" and not workers.isdigit():
        raise InputError(None, f"--workers {workers!r}: use a number or auto")
    if min(batch, steps, repeats) < 1:
        raise InputError(None, "--batch, --steps and --repeats must be at least 1")

    from mri2mri.train.config import resolve_device

    from .training.loader import compare

    def report(row: dict) -> None:
        typer.echo(json.dumps({k: v for k, v in row.items() if k != "all"}))

    rows = compare(data, cache, resolve_device(device), batch=batch, steps=steps,
                   workers=workers if workers == "auto" else int(workers), repeats=repeats,
                   progress=report)
    write_json(json_path, rows)
    typer.echo(f"wrote {json_path}")


@app.command("training-ddp")
def training_ddp(
    *,
    data: Annotated[Path, typer.Option(help="BIDS-like cohort (T1w -> T2w).")],
    work: Annotated[Path, typer.Option(help="Working directory: slice cache and the runs "
                                            "(warm, one, two).")],
    json_path: Annotated[Path, typer.Option("--json", help="Results file (JSON, replaced).")],
    epochs: Annotated[int, typer.Option(help="Epochs of each run.")] = 3,
    slices_per_epoch: Annotated[int, typer.Option(help="Slices per epoch.")] = 96,
    batch_size: Annotated[int, typer.Option(help="Global batch (split across the two "
                                                 "processes).")] = 8,
    threads: Annotated[int, typer.Option(help="Threads of the one process (each of the two "
                                              "gets half).")] = 2,
    tolerance: Annotated[float | None, typer.Option(
        help="Largest relative gap between the two runs' epoch losses that counts as "
             "agreement (default: mri2mri.benchmarks.training.ddp.TOLERANCE, 5e-3); "
             "exit code 1 beyond it.")] = None,
) -> None:
    """DistributedDataParallel on the CPU: 2 gloo processes vs 1, same global batch."""
    import json
    import subprocess

    from mri2mri.data.cohort import Cohort
    from mri2mri.runtime.core.atomic import check_output_path, write_json
    from mri2mri.runtime.core.errors import InputError

    from .training.ddp import compare

    Cohort.discover(data)
    check_output_path(json_path, overwrite=True)
    if work.exists() and not work.is_dir():
        raise InputError(work, "exists and is not a directory")
    if min(epochs, slices_per_epoch, batch_size, threads) < 1:
        raise InputError(None, "--epochs, --slices-per-epoch, --batch-size and --threads "
                               "must be at least 1")
    try:
        result = compare(data, work, epochs=epochs, slices_per_epoch=slices_per_epoch,
                         batch_size=batch_size, threads=threads,
                         progress=lambda what: _err.print(what),
                         **({} if tolerance is None else {"tolerance": tolerance}))
    except subprocess.CalledProcessError as exc:
        _err.print((exc.stdout + exc.stderr).rstrip(), markup=False, soft_wrap=True)
        _err.print(f"error: a training run failed (exit {exc.returncode}): "
                   f"{' '.join(exc.cmd)}", markup=False, soft_wrap=True)
        raise typer.Exit(1) from None
    write_json(json_path, result)
    typer.echo(json.dumps(result, indent=2))
    verdict = "agree" if result["agree"] else "DISAGREE"
    typer.echo(f"loss curves {verdict}: largest relative gap "
               f"{result['max_relative_loss_difference']:.2e} (tolerance "
               f"{result['tolerance']:.0e})")
    if not result["agree"]:
        raise typer.Exit(1)


@app.command()
def distortion(
    *,
    data: Annotated[Path, typer.Option(help="Cohort with an EPI b=0: mri2mri-data demo --epi, "
                                            "or mri2mri-data pseudo-dwi.")],
    out: Annotated[Path, typer.Option(help="Output folder (results.csv, summary.json, "
                                           "table.md, truth/, cache/).")],
    model: Annotated[str | None, typer.Option(help="T1w -> b0 model (name or ONNX file) for "
                                                   "'ours'.")] = None,
    source: Annotated[Path | None, typer.Option(help="A pseudo-DWI cohort's source (the real "
                                                     "T1w/T2w dataset): its truth is remade "
                                                     "from it.")] = None,
    subject: Annotated[list[str] | None, typer.Option(help="Only this subject (repeatable).")]
    = None,
    ants: Annotated[bool, typer.Option(help="Include SyN-SDC-like (ANTs) when antspyx is "
                                            "installed.")] = True,
) -> None:
    """Distortion correction against the simulator's known field: none, rigid, affine,
    SyN-SDC-like, ours (through a synthesized b=0) and the true-b=0 reference (issue 32)."""
    from .distortion import run_distortion_benchmark

    summary = run_distortion_benchmark(data, out, model=model, source=source, subjects=subject,
                                       ants=ants, progress=lambda m: _err.print(m, markup=False))
    typer.echo((out / "table.md").read_text())
    typer.echo(f"wrote {out}/summary.json, results.csv, table.md "
               f"({summary['wall_seconds']:.0f} s)")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
