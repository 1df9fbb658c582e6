"""The cohort side of a run: `prepare_data` -> `RunData`, and the loader of its slices.

The cohort is split (the same subjects when resuming), its subjects and the simulated
prior's (`mri2mri.train.prior`) are prepared once into the on-disk slice cache
(`mri2mri.train.cache`), the normalisation's target scale and the LUT baseline are
fitted on the training subjects (a resumed run reloads its LUT), and the per-epoch
validation subset is drawn. `training_loader` feeds each process its share of an
epoch's slices, augmented.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime.bids.names import dataset_name
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.metadata import Normalisation
from mri2mri.runtime.synthesis.ood import combine_summaries

from . import distributed
from . import prior as simulated
from .augment import build_transform
from .baseline import IntensityLUT, LUTStats
from .cache import CachedSubject, CacheSpec, SliceCache
from .checkpoint import RunState
from .config import TrainConfig, available_cpus, resolve_workers
from .dataset import CachedSlices, EpochSampler, context_stacks
from .validation import SubsetValidation

#: Validation input slices stored with each checkpoint for export's parity check.
PARITY_SLICES = 4


@dataclass
class RunData:
    """The cohort side of a run: its split, cached slices, normalisation, LUT baseline and
    the per-epoch validation subset."""

    split: dict[str, list[str]]
    cache: SliceCache
    train_entries: list[CachedSubject]
    val_entries: list[CachedSubject]
    val_subjects: list[Subject]
    norm: Normalisation
    #: What the model is trained on, for the run-time "unlike the training data" check.
    summary: dict[str, Any]
    lut: IntensityLUT
    subset: SubsetValidation
    #: The LUT baseline on `subset` (rank 0 only; {} elsewhere).
    lut_subset: dict[str, float]
    #: A few validation input slices stored with each checkpoint for export's parity check.
    parity: np.ndarray
    #: How the split was chosen, in words (`Cohort.split_rule`), for the model card.
    split_rule: str = ""
    #: The simulated prior's cached subjects (trained on, never validated on).
    prior_entries: list[CachedSubject] = field(default_factory=list)
    #: What the prior was ({} without one): subjects, resolution_mm, augment.
    prior: dict[str, Any] = field(default_factory=dict)


def _split(config: TrainConfig, cohort: Cohort, resume: RunState | None
           ) -> dict[str, list[str]]:
    """Subject ids per split among those with every contrast the run needs."""
    usable = {s.id for s in cohort.with_contrasts(*config.sources, config.target)}
    split = {name: [s.id for s in cohort.split(name, config.seed) if s.id in usable]
             for name in ("train", "validation", "test")}
    if resume is not None and resume.split != split:
        raise InputError(config.data, "cannot resume: the cohort's subject split changed")
    if not split["train"] or not split["validation"]:
        raise InputError(config.data, f"need training and validation subjects with "
                                      f"{', '.join(config.sources)} and {config.target}; found "
                                      f"{len(split['train'])} and {len(split['validation'])} "
                                      "(at least 3 subjects with these contrasts)")
    return split


def _prepare_cache(cache: SliceCache, subjects: list[Subject],
                   ctx: distributed.Dist, console: Console) -> list[CachedSubject]:
    """Check the cache and build what is missing: each rank a share, then everyone checks."""
    jobs = max(1, min(4, available_cpus() // ctx.world))
    notes: list[str] = []
    with progress_bar("{task.fields[note]}", console=console) as progress:
        task = progress.add_task("preparing subjects", total=None, note="")

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total, refresh=True)

        if ctx.enabled:
            cache.ensure(subjects[ctx.rank::ctx.world], jobs, notes.append, advance)
            ctx.barrier()
        entries = cache.ensure(subjects, jobs, notes.append, advance)
    for note in notes:
        console.print(f"[yellow]slice cache[/]: {note}")
    console.print(f"slice cache {cache.root}: {len(subjects)} subjects, {cache.built} "
                  f"prepared now, {len(subjects) - cache.built} reused")
    return entries


def _parity_slices(subject: CachedSubject, context: int) -> np.ndarray:
    """`PARITY_SLICES` network inputs from the middle of `subject`."""
    centre = subject.n_slices // 2
    return context_stacks(subject.array("sources"),
                          range(max(0, centre - PARITY_SLICES // 2),
                                min(subject.n_slices, centre + PARITY_SLICES // 2)), context)


def prepare_data(config: TrainConfig, out: Path, *, device: torch.device,
                 ctx: distributed.Dist, console: Console, resume: RunState | None = None
                 ) -> RunData:
    """Split the cohort, cache its slices, fit (or, resuming `resume`, reload) the LUT
    baseline."""
    cohort = Cohort.discover(config.data)
    split = _split(config, cohort, resume)
    if config.batch_size % ctx.world:
        raise InputError(None, f"--batch-size {config.batch_size} (the global batch) must be a "
                               f"multiple of the number of processes ({ctx.world})")
    norm = Normalisation.named(config.normalisation)
    cache = SliceCache(config.cache or out / "cache", CacheSpec.of(
        config.sources, config.target, config.model_preset().geometry, norm))
    train_ids, val_ids = split["train"], split["validation"]
    sim_subjects, sim_info = _simulated_prior(
        config, [cohort.subject(i) for i in train_ids], root=Path(cache.root).parent, ctx=ctx,
        console=console)
    entries = _prepare_cache(cache, [cohort.subject(i) for i in train_ids + val_ids]
                             + sim_subjects, ctx, console)
    n_own = len(train_ids) + len(val_ids)
    train_entries, val_entries = entries[:len(train_ids)], entries[len(train_ids):n_own]
    norm.target_scale = float(np.median([e.target_scale for e in train_entries]))
    summary = combine_summaries([e.summary for e in train_entries],
                                name=dataset_name(config.data))
    if resume is not None:
        lut = IntensityLUT.from_dict(resume.baseline)
    else:
        lut = IntensityLUT.from_stats(LUTStats.total(e.lut_stats() for e in train_entries))
    subset = SubsetValidation(val_entries, config.val_slices, config.seed, config.context)
    return RunData(split=split, cache=cache, train_entries=train_entries,
                   val_entries=val_entries, val_subjects=[cohort.subject(i) for i in val_ids],
                   norm=norm, summary=summary, lut=lut, subset=subset,
                   lut_subset=subset.evaluate_lut(lut, device) if ctx.is_main else {},
                   parity=_parity_slices(val_entries[0], config.context),
                   split_rule=cohort.split_rule(), prior_entries=entries[n_own:], prior=sim_info)


def _simulated_prior(config: TrainConfig, train_subjects: list[Subject], *, root: Path,
                     ctx: distributed.Dist, console: Console
                     ) -> tuple[list[Subject], dict[str, Any]]:
    """The simulated prior's subjects for this run (`mri2mri.train.prior`), and what they are."""
    contrasts = [*config.sources, config.target]
    if config.simulated_subjects == 0:
        return [], {}
    if not simulated.supports(contrasts):
        console.print(f"[yellow]simulated prior[/]: the simulator does not image "
                      f"{', '.join(sorted(set(contrasts) - simulated.SIMULATED_CONTRASTS))}; "
                      "training on the cohort alone")
        return [], {}
    resolution = simulated.prior_resolution(train_subjects, config.sources[0])
    folder = root / "simulated"
    if ctx.enabled and not ctx.is_main:
        ctx.barrier()  # rank 0 generates; the others read what it wrote
    subjects = simulated.prior_subjects(config.simulated_subjects, seed=config.seed,
                                        resolution=resolution, root=folder, console=console,
                                        contrasts=contrasts,
                                        jobs=max(1, available_cpus() // ctx.world))
    if ctx.enabled and ctx.is_main:
        ctx.barrier()
    return subjects, {"subjects": len(subjects), "resolution_mm": resolution,
                      "augment": config.simulated_augment}


def build_loader(dataset: CachedSlices, sampler: EpochSampler, *, workers: int,
                 device: torch.device, seed: int) -> torch.utils.data.DataLoader:
    """The training DataLoader: `workers` persistent processes, pinned memory on CUDA."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=sampler.per_rank_batch, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global torch RNG,
        # or a resumed run (fresh iterator) would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed))


def training_loader(config: TrainConfig, data: RunData, device: torch.device,
                    ctx: distributed.Dist) -> torch.utils.data.DataLoader:
    """This process's share of each epoch's slices (the cohort's and the simulated prior's),
    augmented as the config says."""
    own, sim = build_transform(config.augment), build_transform(config.simulated_augment)
    dataset = CachedSlices(data.train_entries + data.prior_entries, context=config.context,
                           seed=config.seed,
                           subject_transforms=[own] * len(data.train_entries)
                           + [sim] * len(data.prior_entries))
    sampler = EpochSampler(len(dataset), config.slices_per_epoch, seed=config.seed,
                           batch_size=config.batch_size, rank=ctx.rank, world=ctx.world)
    workers = resolve_workers(config.workers, device, max(1, available_cpus() // ctx.world))
    return build_loader(dataset, sampler, workers=workers, device=device, seed=config.seed)
