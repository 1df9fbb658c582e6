"""Score checkpoints and their LUT baselines on whole cohorts (any acquisition shift).

Each subject goes through the training data path (`load_subject`: the runtime's
preprocessing, target resampled onto the source grid), the model sees
`stack_context` stacks as at inference, and the prediction is restored with the
subject's own target scale, exactly as validation during training does, so a
cohort's numbers are comparable with the run's validation curve.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import restore_volume
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.train.baseline import IntensityLUT
from mri2mri.train.checkpoint import load_checkpoint
from mri2mri.train.cohort import Cohort
from mri2mri.train.inference import model_from_checkpoint, predict_slices
from mri2mri.train.metrics import volume_metrics
from mri2mri.train.prepare import load_subject

METHODS = ("model", "lut")


@dataclass
class CohortScore:
    """One subject of one cohort, scored for one run and method."""

    run: str
    cohort: str
    subject: str
    method: str
    mae: float
    psnr: float
    ssim: float


def evaluate_checkpoint(checkpoint: str | Path, cohorts: dict[str, str | Path], *,
                        run_name: str | None = None, threads: int = 0,
                        progress: Callable[[str], None] | None = None) -> list[CohortScore]:
    """Model and LUT metrics for every subject (with the model's contrasts) of every cohort."""
    import torch

    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    model, meta = model_from_checkpoint(state)
    lut = IntensityLUT.from_dict(state["baseline"])
    name = run_name or checkpoint.parent.name
    if threads:
        torch.set_num_threads(threads)
    rows = []
    for cohort_name, root in cohorts.items():
        subjects = Cohort.discover(root).with_contrasts(*meta.sources, meta.target)
        if not subjects:
            raise InputError(root, f"no subject has {', '.join(meta.sources)} and {meta.target}")
        for subject in subjects:
            if progress:
                progress(f"{name} {cohort_name} {subject.id}")
            data = load_subject(subject, meta.sources, meta.target, meta.geometry,
                                meta.normalisation)
            inputs = stack_context(data.prepared.slices, meta.context)
            predictions = {"model": predict_slices(model, inputs),
                           "lut": lut.predict(data.prepared.slices)}
            for method, pred in predictions.items():
                volume = restore_volume(pred, data.prepared, data.target_scale)
                scores = volume_metrics(volume, data.target_volume, data.mask_volume)
                rows.append(CohortScore(name, cohort_name, subject.id, method, **scores))
    return rows


def evaluate_runs(runs: Sequence[str | Path], cohorts: dict[str, str | Path], out_dir: str | Path,
                  *, threads: int = 0, progress: Callable[[str], None] | None = None
                  ) -> dict[str, dict]:
    """Score each run directory's best.pt; write scores.csv and summary.json to `out_dir`.

    Runs already scored in an existing scores.csv (same run name and cohorts) are
    reused, so a grid can be evaluated as its runs finish.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "scores.csv"
    rows = _read_scores(csv_path)
    done = {(r.run, r.cohort) for r in rows}
    for run in runs:
        run = Path(run)
        missing = {k: v for k, v in cohorts.items() if (run.name, k) not in done}
        if missing:
            rows += evaluate_checkpoint(run / "best.pt", missing, run_name=run.name,
                                        threads=threads, progress=progress)
            _write_scores(rows, csv_path)
    names = {Path(r).name for r in runs}
    summary = summarise([r for r in rows if r.run in names and r.cohort in cohorts])
    write_json(out / "summary.json", summary, sort_keys=True)
    return summary


def summarise(rows: Sequence[CohortScore]) -> dict[str, dict]:
    """run -> cohort -> method -> mean of each metric over the cohort's subjects."""
    summary: dict[str, dict] = {}
    for run in sorted({r.run for r in rows}):
        for cohort in sorted({r.cohort for r in rows if r.run == run}):
            for method in METHODS:
                sel = [r for r in rows if (r.run, r.cohort, r.method) == (run, cohort, method)]
                if sel:
                    summary.setdefault(run, {}).setdefault(cohort, {})[method] = {
                        k: float(np.mean([getattr(r, k) for r in sel]))
                        for k in ("mae", "psnr", "ssim")} | {"subjects": len(sel)}
    return summary


def _read_scores(path: Path) -> list[CohortScore]:
    if not path.exists():
        return []
    with path.open() as f:
        return [CohortScore(r["run"], r["cohort"], r["subject"], r["method"], float(r["mae"]),
                            float(r["psnr"]), float(r["ssim"])) for r in csv.DictReader(f)]


def _write_scores(rows: Sequence[CohortScore], path: Path) -> None:
    with atomic_path(path, overwrite=True) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(rows[0])))
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
