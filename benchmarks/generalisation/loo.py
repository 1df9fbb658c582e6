"""Leave one subject out on a real cohort: train on the others, score the one left out.

What a user with a handful of real subjects from several scanners asks: does a
network trained on the other scanners beat the look-up table on a scanner it has
never seen? For each subject S of the cohort (those with both contrasts, at
least 3), `leave_one_out`:

1. makes ``OUT/folds/S/train`` (a BIDS folder of symlinks to every other subject)
   and ``OUT/folds/S/test`` (S alone);
2. trains ``TrainConfig(data=OUT/folds/S/train, ..., out=OUT/folds/S/run)``:
   the recipe under test is TrainConfig's defaults plus `overrides`;
3. scores S with the fold's ``best.pt`` and the LUT stored in it (fitted by the
   trainer on that fold's training subjects), through `evaluate.predict_subject`,
   inside the brain and inside the brain without the T2w-bright lesion
   (`lesion.bright_lesion_mask`): level-free (`train.metrics.level_free_scores`, each
   image z-scored, the first table), as restored on S's own target scale, and that
   PSNR with the best global gain (`train.metrics.gain_matched`);
4. writes ``OUT/folds/S/result.json`` with a fingerprint of the fold's recipe:
   a rerun reuses it, so an interrupted benchmark continues where it stopped (a
   fold stopped mid-training resumes from its ``last.pt``).

A zero-shot run (trained elsewhere) is scored on every subject the same way.
Then ``results.csv``, ``summary.json`` and ``table.md`` (`report.loo_table`) are
written to OUT.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime import __version__
from mri2mri.runtime.bids.names import dataset_description, dataset_name, generated_by
from mri2mri.runtime.core.atomic import atomic_dir, atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.train.config import TrainConfig, available_cpus
from mri2mri.train.metrics import (
    GAIN_MATCHED,
    LEVEL_FREE,
    gain_matched,
    level_free_region,
    level_free_scores,
)
from mri2mri.train.prepare import SubjectData
from mri2mri.train.trainer import train

from .evaluate import ScoredRun, predict_subject, score_regions
from .lesion import bright_lesion_mask, volume_ml
from .ood import VERDICTS, verdicts
from .overrides import parse_overrides
from .report import loo_table, upgrade_summary, write_results_csv

#: Bump when a fold's result would differ for the same recipe (scoring changed).
RESULT_FORMAT = 1
RESULT = "result.json"
METHODS = ("model", "lut", "zero_shot", "zero_shot_lut")
REGIONS = ("brain", "brain_without_lesion")
#: The metrics of each method and region in a fold's scores.
METRICS = ("psnr", "ssim", "mae", *GAIN_MATCHED, *LEVEL_FREE)
#: TrainConfig fields that do not change what a fold produces: left out of its fingerprint.
_NOT_IN_FINGERPRINT = ("data", "out", "cache", "threads", "workers", "log_every")

Progress = Callable[[str], None]


def leave_one_out(data: str | Path, out: str | Path, *, source: str = "T1w",
                  target: str = "T2w", overrides: dict[str, Any] | list[str] | None = None,
                  zero_shot: str | Path | None = None, seed: int = 0, threads: int = 0,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Run (or continue) the leave-one-subject-out benchmark; return summary.json's content.

    `overrides`: TrainConfig fields as a dict, or ``KEY=VALUE`` strings (parsed with
    each field's type). `threads`: CPU threads of training (unless overridden) and
    of scoring (0: all).
    """
    say = progress or (lambda _: None)
    out = Path(out)
    subjects = _subjects(data, source, target)
    if isinstance(overrides, list):
        overrides = parse_overrides(overrides)
    overrides = dict(overrides or {})
    if threads and "threads" not in overrides:
        overrides["threads"] = threads
    overrides.setdefault("cache", str(out / "cache"))  # every fold prepares a subject once
    recipe = _recipe(source, target, seed, overrides)
    zero_run = _zero_shot_checkpoint(zero_shot, recipe)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is not a directory")
    started = time.perf_counter()
    folds = {}
    for k, subject in enumerate(subjects, 1):
        say(f"fold {k}/{len(subjects)}: {subject.id} held out, training on "
            f"{', '.join(s.id for s in subjects if s is not subject)}")
        folds[subject.id] = run_fold(data, out, subjects, subject, recipe=recipe,
                                     threads=threads, say=say)
    zero = None
    if zero_run is not None:
        say(f"zero-shot: {zero_shot} on {len(subjects)} subjects")
        zero = score_zero_shot(zero_run, out, subjects, threads=threads, say=say)
    summary = summarise(data, recipe, folds, zero=zero, zero_shot=zero_shot,
                        wall_seconds=time.perf_counter() - started)
    write_outputs(summary, out)
    return summary


def _subjects(data: str | Path, source: str, target: str) -> list[Subject]:
    subjects = Cohort.discover(data).with_contrasts(source, target)
    if len(subjects) < 3:
        raise InputError(data, f"leave-one-out needs at least 3 subjects with {source} and "
                               f"{target}; found {len(subjects)}")
    return subjects


def _recipe(source: str, target: str, seed: int, overrides: dict[str, Any]) -> TrainConfig:
    """The fold's TrainConfig, checked once before any work (data and out set per fold)."""
    for key in ("data", "sources", "target", "out", "seed"):
        if key in overrides:
            raise InputError(None, f"--set {key}=...: set by the leave-one-out itself "
                                   "(use --source, --target, --seed)")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(None, f"--set {unknown[0]}=...: not a TrainConfig field")
    try:
        return TrainConfig(data="", sources=[source], target=target, out="", seed=seed,
                           **overrides)
    except (TypeError, ValueError) as exc:
        raise InputError(None, f"invalid recipe: {exc}") from None


def _zero_shot_checkpoint(run_dir: str | Path | None, recipe: TrainConfig) -> ScoredRun | None:
    if run_dir is None:
        return None
    checkpoint = Path(run_dir) / "best.pt"
    if not checkpoint.is_file():
        raise InputError(run_dir, "no best.pt in this run directory")
    run = ScoredRun.open(checkpoint, Path(run_dir).name)
    if run.meta.sources != recipe.sources or run.meta.target != recipe.target:
        raise InputError(checkpoint, f"translates {'+'.join(run.meta.sources)} -> "
                                     f"{run.meta.target}, not {recipe.sources[0]} -> "
                                     f"{recipe.target}")
    return run


def fingerprint(recipe: TrainConfig, held_out: str, train_ids: list[str]) -> str:
    """What a fold's result depends on: the recipe (less paths and speed knobs), its subjects.

    An option at the value that runs made before it existed had
    (`TrainConfig.BEFORE_OPTION`) is left out, so their folds keep their fingerprints."""
    config = {k: v for k, v in asdict(recipe).items() if k not in _NOT_IN_FINGERPRINT
              and not (k in TrainConfig.BEFORE_OPTION and TrainConfig.BEFORE_OPTION[k] == v)}
    text = json.dumps({"format": RESULT_FORMAT, "config": config, "held_out": held_out,
                       "train": sorted(train_ids)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_fold(data: str | Path, out: Path, subjects: list[Subject], held_out: Subject, *,
             recipe: TrainConfig, threads: int, say: Progress) -> dict[str, Any]:
    """One fold: train on the others, score `held_out`; reuse a finished fold's result."""
    fold = out / "folds" / held_out.id
    others = [s for s in subjects if s is not held_out]
    key = fingerprint(recipe, held_out.id, [s.id for s in others])
    done = _read_result(fold / RESULT, key)
    if done is not None:
        say(f"{held_out.id}: done before (fingerprint {key}), reused")
        if _scored_before(done):  # a fold scored before some of its figures were reported
            _set_threads(threads)
            scores, lesion, found = score_subject(ScoredRun.open(fold / "run" / "best.pt"),
                                                  _test_subject(fold, held_out))
            done.update(scores=scores, lesion_ml=lesion, **found)
            write_json(fold / RESULT, done)
        return done
    write_bids_folder(fold / "train", data, others, f"without {held_out.id}")
    write_bids_folder(fold / "test", data, [held_out], f"only {held_out.id}")
    run_dir = fold / "run"
    config = replace(recipe, data=str(fold / "train"), out=str(run_dir))
    tick = time.perf_counter()
    result = train(config, resume=(run_dir / "last.pt").exists())
    train_seconds = time.perf_counter() - tick
    tick = time.perf_counter()
    _set_threads(threads)
    scores, lesion, found = score_subject(ScoredRun.open(result.best_checkpoint),
                                          _test_subject(fold, held_out))
    record = {"fingerprint": key, "subject": held_out.id, "train_subjects": [s.id for s in others],
              "best_epoch": result.best_epoch, "train_seconds": train_seconds,
              "score_seconds": time.perf_counter() - tick, "lesion_ml": lesion, "scores": scores,
              **found}
    write_json(fold / RESULT, record)
    say(f"{held_out.id}: network PSNR {scores['model']['brain']['psnr']:.2f} dB, LUT "
        f"{scores['lut']['brain']['psnr']:.2f} dB ({train_seconds:.0f} s training)")
    return record


def _scored_before(result: dict[str, Any]) -> bool:
    """Whether a finished fold lacks a figure that scoring now reports (scored again then:
    the same network and subject, so the figures it had come out the same)."""
    brain = result.get("scores", {}).get("model", {}).get("brain", {})
    return any(key not in result for key in VERDICTS) or any(k not in brain for k in METRICS)


def _test_subject(fold: Path, held_out: Subject) -> Subject:
    """The held-out subject as the fold's own test folder presents it."""
    return Cohort.discover(fold / "test").subject(held_out.id)


def _read_result(path: Path, key: str) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == key else None


def _set_threads(threads: int) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)


def write_bids_folder(folder: Path, data: str | Path, subjects: list[Subject], what: str) -> None:
    """A BIDS folder of symlinks to `subjects`' files, with its description and participants.

    Made afresh (atomically) each time: the links are cheap, and a cohort that changed
    since the last run is seen as it is now.
    """
    data = Path(data)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        for subject in subjects:
            for path in sorted((data / subject.id).rglob("*")):
                if path.is_file():
                    link = tmp / path.relative_to(data)
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.symlink_to(path.resolve())
        name = f"{dataset_name(data)} {what}"
        write_json(tmp / "dataset_description.json", dataset_description(
            name, "raw", [generated_by("mri2mri-bench generalisation",
                                       "Leave-one-out fold: symlinks to subjects of another "
                                       "dataset.")]))
        (tmp / "participants.tsv").write_text(_participants(data, [s.id for s in subjects]))


def _participants(data: Path, ids: list[str]) -> str:
    """The cohort's participants.tsv rows of `ids` (just the ids when it has none)."""
    path = data / "participants.tsv"
    lines = path.read_text().splitlines() if path.is_file() else []
    if not lines or not lines[0].startswith("participant_id"):
        return "participant_id\n" + "".join(f"{i}\n" for i in ids)
    rows = [line for line in lines[1:] if line.split("\t", 1)[0] in ids]
    return "\n".join([lines[0], *rows]) + "\n"


def score_subject(run: ScoredRun, subject: Subject, names: tuple[str, str] = ("model", "lut")
                  ) -> tuple[dict[str, dict[str, dict[str, float]]], float,
                             dict[str, dict[str, Any]]]:
    """method -> region -> metrics (`METRICS`) for one subject, its lesion's volume (ml),
    and the network's out-of-distribution verdicts on it by check (`ood.verdicts`).

    The scale-restored metrics and the gain-matched PSNR are scored in `scored_regions`;
    the level-free ones (`LEVEL_FREE`) in `level_free_regions`, their own definition of
    the brain (source and reference both above 0), less the same lesion."""
    data, volumes = predict_subject(run, subject, names)
    regions, lesion_ml = scored_regions(data)
    scores = score_regions(volumes, data.target_volume, regions)
    free = level_free_regions(data, regions)
    for method, volume in volumes.items():
        for region, mask in regions.items():
            scores[method][region] |= gain_matched(volume, data.target_volume, mask)
            if region in free:
                scores[method][region] |= level_free_scores(volume, data.target_volume,
                                                            free[region])
    return scores, lesion_ml, verdicts(run, data)


def scored_regions(data: SubjectData) -> tuple[dict[str, np.ndarray], float]:
    """The regions a held-out subject is scored in (`REGIONS`: the brain, and the brain
    without its T2w-bright lesion when anything is left), and the lesion's volume (ml)."""
    t1 = data.prepared.view.restore(data.prepared.view.data)
    voxel_mm = data.prepared.reference.header.get_zooms()[:3]
    brain = np.asarray(data.mask_volume, dtype=bool)
    lesion = bright_lesion_mask(t1, data.target_volume, brain, voxel_mm)
    regions = {"brain": brain}
    if (brain & ~lesion).any():
        regions["brain_without_lesion"] = brain & ~lesion
    return regions, volume_ml(lesion, voxel_mm)


def level_free_regions(data: SubjectData, regions: dict[str, np.ndarray]
                       ) -> dict[str, np.ndarray]:
    """The level-free scores' regions (`mri2mri.train.metrics.level_free_region`): where the
    source as loaded and the reference are both above 0, and that less the lesion of
    `regions` (the brain without its lesion); a region left empty is not scored."""
    source = np.asarray(data.prepared.reference.dataobj, dtype=np.float32)
    if source.shape != data.target_volume.shape:  # not a 3D source: its foreground instead
        source = np.asarray(data.mask_volume, dtype=np.float32)
    brain = level_free_region(source, data.target_volume)
    lesion = regions["brain"] & ~regions.get("brain_without_lesion", np.zeros_like(brain))
    found = {"brain": brain, "brain_without_lesion": brain & ~lesion}
    return {name: mask for name, mask in found.items() if mask.any()}


def score_zero_shot(run: ScoredRun, out: Path, subjects: list[Subject], *, threads: int,
                    say: Progress) -> dict[str, Any]:
    """The zero-shot run (network and its own LUT) on every subject; not cached (cheap)."""
    _set_threads(threads)
    per_subject = {}
    for subject in subjects:
        say(f"zero-shot: {subject.id}")
        tick = time.perf_counter()
        scores, lesion, found = score_subject(run, subject, ("zero_shot", "zero_shot_lut"))
        per_subject[subject.id] = {"scores": scores, "lesion_ml": lesion,
                                   "score_seconds": time.perf_counter() - tick, **found}
    return per_subject


def summarise(data: str | Path, recipe: TrainConfig, folds: dict[str, dict[str, Any]], *,
              zero: dict[str, Any] | None, zero_shot: str | Path | None,
              wall_seconds: float) -> dict[str, Any]:
    """summary.json: per subject and mean scores, the recipe, software, machine, wall times."""
    subjects = {}
    for sid, fold in folds.items():
        scores = dict(fold["scores"])
        if zero is not None:
            scores.update(zero[sid]["scores"])
        subjects[sid] = {key: fold[key] for key in ("train_subjects", "best_epoch",
                                                    "train_seconds", "score_seconds",
                                                    "lesion_ml", "fingerprint", *VERDICTS)}
        subjects[sid]["scores"] = scores
        if zero is not None:
            subjects[sid]["zero_shot_score_seconds"] = zero[sid]["score_seconds"]
            for check in VERDICTS:
                subjects[sid][f"zero_shot_{check}"] = zero[sid][check]
    recipe_dict = {**asdict(recipe), "data": "folds/<subject>/train", "out": "folds/<subject>/run"}
    return {"data": str(data), "dataset": dataset_name(data), "source": recipe.sources[0],
            "target": recipe.target, "seed": recipe.seed, "recipe": recipe_dict,
            "zero_shot_run": None if zero_shot is None else str(zero_shot),
            "subjects": subjects, "mean": _means(subjects), "software": _software(),
            "machine": {"cpu_count": os.cpu_count(), "cpus_available": available_cpus(),
                        "platform": platform.platform()},
            "wall_seconds": wall_seconds}


def _means(subjects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """method -> region -> metric -> mean over the subjects that have it (with their count);
    a metric that not every one of them has (an older summary) is left out."""
    means: dict[str, Any] = {}
    for method in METHODS:
        for region in REGIONS:
            values = [s["scores"][method][region] for s in subjects.values()
                      if region in s["scores"].get(method, {})]
            if values:
                means.setdefault(method, {})[region] = {
                    k: float(np.mean([v[k] for v in values])) for k in METRICS
                    if all(k in v for v in values)} | {"subjects": len(values)}
    return means


def _software() -> dict[str, str]:
    import nibabel
    import scipy
    import torch

    return {"mri2mri": __version__, "python": platform.python_version(),
            "torch": torch.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "nibabel": nibabel.__version__}


def write_outputs(summary: dict[str, Any], out: Path) -> None:
    """results.csv, summary.json and table.md, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    write_results_csv(summary, out / "results.csv")
    write_json(out / "summary.json", summary)
    with atomic_path(out / "table.md", overwrite=True) as tmp:
        tmp.write_text(loo_table(summary))


def rerender(out: str | Path) -> str:
    """table.md (and results.csv) again from OUT/summary.json; returns the table."""
    path = Path(out) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"no readable leave-one-out summary ({exc})") from None
    if not isinstance(summary, dict) or "subjects" not in summary:
        raise InputError(path, "not a leave-one-out summary")
    summary = upgrade_summary(summary)
    write_outputs(summary, Path(out))
    return loo_table(summary)
