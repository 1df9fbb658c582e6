"""Score checkpoints and their LUT baselines on whole cohorts (any acquisition shift).

Each subject goes through the training data path (`load_subject`: the runtime's
preprocessing, target resampled onto the source grid), the model sees
`stack_context` stacks as at inference, and the prediction is restored with the
subject's own target scale, exactly as validation during training does, so a
cohort's numbers are comparable with the run's validation curve.
`ScoredRun`, `predict_subject` and `score_regions` are that scoring, shared with
the leave-one-out benchmark (`loo.py`), which adds regions (the brain without its
lesion) and names the methods of a zero-shot run.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.preprocess import restore_volume
from mri2mri.runtime.imaging.slicing import stack_context
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.train.baseline import IntensityLUT
from mri2mri.train.checkpoint import load_checkpoint
from mri2mri.train.inference import model_from_checkpoint, predict_slices
from mri2mri.train.metrics import volume_metrics
from mri2mri.train.model import UNet
from mri2mri.train.prepare import SubjectData, load_subject

#: The two methods every run is scored with: its network and its LUT baseline.
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


@dataclass
class ScoredRun:
    """A checkpoint opened for scoring: its network, metadata and stored LUT baseline.

    The LUT is the one the trainer fitted on the run's own training subjects (saved
    in the checkpoint), so a run is always compared with the baseline it had.
    """

    name: str
    model: UNet
    meta: ModelMetadata
    lut: IntensityLUT
    #: The file it was opened from (a missing feature reference is made from it and its
    #: cohort: `ood.feature_reference`).
    checkpoint: Path | None = None
    #: Where the feature reference came from, or why there is none ("" before it is asked).
    feature_reference_note: str = ""

    @classmethod
    def open(cls, checkpoint: str | Path, name: str | None = None) -> ScoredRun:
        checkpoint = Path(checkpoint)
        state = load_checkpoint(checkpoint)
        model, meta = model_from_checkpoint(state)
        return cls(name or checkpoint.parent.name, model, meta,
                   IntensityLUT.from_dict(state["baseline"]), checkpoint)


def predict_subject(run: ScoredRun, subject: Subject, names: tuple[str, str] = METHODS
                    ) -> tuple[SubjectData, dict[str, np.ndarray]]:
    """The subject through the training data path, and the network's and the LUT's
    predictions (keys `names`) restored with the subject's own target scale."""
    meta = run.meta
    data = load_subject(subject, meta.sources, meta.target, geometry=meta.geometry,
                        norm=meta.normalisation)
    inputs = stack_context(data.prepared.slices, meta.context)
    predictions = {names[0]: predict_slices(run.model, inputs),
                   names[1]: run.lut.predict(data.prepared.slices)}
    return data, {method: restore_volume(pred, data.prepared, data.target_scale)
                  for method, pred in predictions.items()}


def score_regions(volumes: dict[str, np.ndarray], target: np.ndarray,
                  regions: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> region -> `volume_metrics` of each volume against `target` in each region."""
    return {method: {region: volume_metrics(volume, target, mask)
                     for region, mask in regions.items()}
            for method, volume in volumes.items()}


def evaluate_checkpoint(checkpoint: str | Path, cohorts: dict[str, str | Path], *,
                        run_name: str | None = None, threads: int = 0,
                        progress: Callable[[str], None] | None = None) -> list[CohortScore]:
    """Model and LUT metrics for every subject (with the model's contrasts) of every cohort."""
    import torch

    run = ScoredRun.open(checkpoint, run_name)
    meta = run.meta
    if threads:
        torch.set_num_threads(threads)
    rows = []
    for cohort_name, root in cohorts.items():
        subjects = Cohort.discover(root).with_contrasts(*meta.sources, meta.target)
        if not subjects:
            raise InputError(root, f"no subject has {', '.join(meta.sources)} and {meta.target}")
        for subject in subjects:
            if progress:
                progress(f"{run.name} {cohort_name} {subject.id}")
            data, volumes = predict_subject(run, subject)
            scores = score_regions(volumes, data.target_volume, {"brain": data.mask_volume})
            rows += [CohortScore(run.name, cohort_name, subject.id, method, **regions["brain"])
                     for method, regions in scores.items()]
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
