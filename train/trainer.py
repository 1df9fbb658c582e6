"""The training loop: `train(config) -> RunResult`, what `mri2mri-train` runs.

Determinism: the model is initialised from ``torch.manual_seed(seed)``, each
epoch's slice order is a function of (seed, epoch) alone, each item's augmentation
of (seed, epoch, position) (`mri2mri.train.augment`), and the torch RNG
state (dropout) is saved at every epoch end, so on CPU an interrupted run
resumed from ``last.pt`` ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from mri2mri.runtime import __version__
from mri2mri.runtime.bids.names import dataset_name
from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.engine.devices import TORCH_DEVICES, check_device
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis.ood import combine_summaries
from mri2mri.train.cohort import Cohort, Subject

from . import distributed
from .augment import AugmentSpec, build_transform
from .baseline import IntensityLUT, LUTStats
from .cache import CachedSubject, CacheSpec, SliceCache
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import CachedSlices, EpochSampler, context_stacks
from .inference import predict_slices
from .model import build_model, get_preset
from .perceptual import PerceptualLoss
from .validation import METRICS, SUBSET_SLICES, SubsetValidation, full_validation, mean_metrics

PARITY_SLICES = 4
#: What `best.pt` is chosen by (higher is better), on the per-epoch validation slice subset.
SELECTION_METRIC = "psnr"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a run is defined by; defaults are tuned for the 2 mm demo on 2 CPU cores."""

    data: str
    sources: list[str]
    target: str
    out: str
    preset: str = "small"
    epochs: int = 12
    #: Slices drawn per epoch, over all processes of a distributed run.
    slices_per_epoch: int = 600
    #: The global batch: split evenly over the processes of a distributed run.
    batch_size: int = 8
    #: Adam learning rate for the global batch; None: the preset's (2e-4, as in the method).
    lr: float | None = None
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    seed: int = 0
    #: 2.5D input: `context` neighbouring slices on each side, per source, as extra channels.
    context: int = 0
    #: DataLoader worker processes per training process; "auto" picks for the device.
    workers: int | str = "auto"
    device: str = "auto"
    threads: int = 0  # 0: all CPU cores this process may use (shared out over processes)
    #: Slice cache folder; None: ``<out>/cache``.
    cache: str | None = None
    #: Validation slices scored every epoch (a fixed, seeded subset; it selects best.pt).
    val_slices: int = SUBSET_SLICES
    #: Whole-volume (3D) validation every K epochs; 0: only at the end (always at the end).
    full_eval_every: int = 0
    #: auto (CUDA: bf16 where supported, else fp16 with loss scaling; CPU: fp32), fp32, bf16,
    #: fp16.
    precision: str = "auto"
    #: torch.compile the network for training (CUDA; slow to start, faster per step).
    compile: bool = False
    #: Steps between updates of the running loss shown (each one syncs with the device).
    log_every: int = 25
    #: `mri2mri.train.augment` specification, stored in canonical form ("none": off).
    augment: str = "none"
    #: Stop after this many epochs without a better validation PSNR (0: never).
    patience: int = 0

    def __post_init__(self) -> None:
        self.sources = [canonical_contrast(s) for s in self.sources]
        self.target = canonical_contrast(self.target)
        if self.target in self.sources:
            raise ValueError(f"target {self.target} is also a source")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("a source contrast is given twice")
        for name in ("epochs", "slices_per_epoch", "batch_size", "val_slices", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("context", "full_eval_every", "threads", "patience"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0")
        if self.l1_weight < 0 or self.perceptual_weight < 0 or \
                self.l1_weight + self.perceptual_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        if self.workers != "auto" and (not isinstance(self.workers, int) or self.workers < 0):
            raise ValueError(f"workers must be auto or a whole number >= 0 (got {self.workers!r})")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)} "
                             f"(got {self.precision!r})")
        preset = get_preset(self.preset)  # validates the name
        if self.lr is None:
            self.lr = preset.lr
        if self.lr <= 0:
            raise ValueError("the learning rate must be positive")
        self.augment = AugmentSpec.parse(self.augment).to_string()

    #: Fields that may differ when resuming (they do not change the weights on CPU).
    RESUMABLE_CHANGES = ("epochs", "workers", "device", "threads", "data", "cache",
                         "full_eval_every", "precision", "compile", "log_every", "patience")


@dataclass
class RunResult:
    """What a finished run produced.

    `best_metrics` / `baseline_metrics`: whole-volume (3D) validation metrics of the best
    epoch's weights and of the look-up-table baseline; `best_subset_metrics` /
    `baseline_subset_metrics`: the per-epoch slice-subset metrics that chose the best epoch.
    """

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    best_subset_metrics: dict[str, float] = field(default_factory=dict)
    baseline_subset_metrics: dict[str, float] = field(default_factory=dict)
    #: True when `patience` epochs passed without improvement before `epochs` were done.
    stopped_early: bool = False


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    name = check_device(name, TORCH_DEVICES)  # the one validator every command uses
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA device is available")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device("cpu")


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve_workers(workers: int | str, device: torch.device, cpus: int) -> int:
    """DataLoader workers per process. auto: on CUDA enough to keep the GPU fed (cores - 1,
    at most 8); on the CPU one when there are at least 4 cores, else none (the loading is
    a small share of a CPU step, and a worker would take cores from the training threads).
    """
    if workers != "auto":
        return int(workers)
    if device.type == "cuda":
        return max(1, min(8, cpus - 1))
    return 1 if cpus >= 4 else 0


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for fp32. Mixed precision runs on CUDA only."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if device.type != "cuda":
        raise InputError(None, f"--precision {precision} needs a CUDA device (CPU trains in "
                               "fp32)")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Resume a GradScaler across devices and precisions.

    A disabled scaler (CPU, fp32, bf16) saves ``{}``; an enabled one (fp16 on CUDA) its
    scale and growth tracker. Loading ``{}`` into an enabled scaler is an error in
    torch, so an enabled scaler with nothing to resume starts afresh, and a disabled one
    ignores whatever was saved.
    """
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def _lr_factor(epochs: int) -> Callable[[int], float]:
    """pix2pix schedule: constant for the first half, then linear decay towards zero."""
    keep = epochs // 2

    def factor(epoch: int) -> float:
        return 1.0 if epoch < keep else 1.0 - (epoch - keep) / (epochs - keep + 1)

    return factor


def _write_metrics(history: list[dict[str, Any]], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(out, overwrite=True) as tmp:
        tmp.write_text(buffer.getvalue())


def _plot(history: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(epochs, [r["val_psnr"] for r in history], "o-", label="model (slice subset)")
    ax2.plot(epochs, [r["lut_psnr"] for r in history], "--", label="LUT (slice subset)")
    full = [r for r in history if r.get("full_val_psnr") is not None]
    if full:
        ax2.plot([r["epoch"] for r in full], [r["full_val_psnr"] for r in full], "s",
                 label="model (3D volumes)")
        ax2.axhline(full[0]["full_lut_psnr"], ls=":", color="grey", label="LUT (3D volumes)")
    ax2.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _check_resume(config: TrainConfig, stored: dict[str, Any], path: Path) -> None:
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    for key, value in asdict(config).items():
        if key in TrainConfig.RESUMABLE_CHANGES or key == "out":
            continue
        # A run saved before an option existed ran with that option's default.
        if stored.get(key, defaults[key]) != value:
            raise InputError(path, f"cannot resume: the run used {key}="
                                   f"{stored.get(key, defaults[key])!r}, now {value!r}")
    if config.epochs < stored["epochs"]:
        raise InputError(path, f"cannot resume with fewer epochs ({config.epochs}) than the "
                               f"run was started with ({stored['epochs']})")


def _loss_fn(config: TrainConfig, perceptual: PerceptualLoss
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = output.new_zeros((), dtype=torch.float32)
        if config.perceptual_weight:
            total = total + config.perceptual_weight * perceptual(output, target)
        if config.l1_weight:
            total = total + config.l1_weight * (output.float() - target).abs().mean()
        return total

    return loss


def train(config: TrainConfig, *, resume: bool = False, console: Console | None = None,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> RunResult:
    """Train a model on a cohort; write last.pt, best.pt, metrics.csv, loss.png, config.json.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes
    files and prints. `on_epoch_end(epoch, row)` is called after each epoch's
    checkpoint is written.
    """
    started = time.perf_counter()
    ctx = distributed.from_environment()
    console = console or Console(stderr=True, quiet=not ctx.is_main)
    out = Path(config.out)
    last_path = out / "last.pt"
    resume_state = None
    if resume:
        resume_state = load_checkpoint(last_path) if last_path.exists() else None
        if resume_state is None:
            raise InputError(last_path, "nothing to resume (no last.pt in the run directory)")
        _check_resume(config, resume_state["train_config"], last_path)
    elif last_path.exists():
        raise InputError(out, "already holds a run (last.pt); pass --resume to continue it "
                              "or choose another --out")
    out.mkdir(parents=True, exist_ok=True)

    device = resolve_device(config.device, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.init(ctx, device)
    threads = config.threads or max(1, _cpu_count() // ctx.world)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True  # fixed slice sizes: pick the fastest kernels
    try:
        return _run(config, out, device, ctx, resume_state, console, on_epoch_end, started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.backends.cudnn.benchmark = previous_benchmark
        distributed.shutdown(ctx)




def _prepare_cache(cache: SliceCache, subjects: list[Subject],
                   ctx: distributed.Dist, console: Console) -> list[CachedSubject]:
    """Check the cache and build what is missing: each rank a share, then everyone checks."""
    jobs = max(1, min(4, _cpu_count() // ctx.world))
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


def _run(config: TrainConfig, out: Path, device: torch.device, ctx: distributed.Dist,
         resume_state: dict[str, Any] | None, console: Console,
         on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
         started: float) -> RunResult:
    cohort = Cohort.discover(config.data)
    usable = {s.id for s in cohort.with_contrasts(*config.sources, config.target)}
    split = {name: [s.id for s in cohort.split(name, config.seed) if s.id in usable]
             for name in ("train", "validation", "test")}
    if resume_state is not None and resume_state["split"] != split:
        raise InputError(config.data, "cannot resume: the cohort's subject split changed")
    if not split["train"] or not split["validation"]:
        raise InputError(config.data, f"need training and validation subjects with "
                                      f"{', '.join(config.sources)} and {config.target}; found "
                                      f"{len(split['train'])} and {len(split['validation'])} "
                                      "(at least 3 subjects with these contrasts)")
    if config.batch_size % ctx.world:
        raise InputError(None, f"--batch-size {config.batch_size} (the global batch) must be a "
                               f"multiple of the number of processes ({ctx.world})")
    channels = len(config.sources) * (2 * config.context + 1)
    preset = get_preset(config.preset, in_channels=channels)
    norm = Normalisation()
    cache = SliceCache(config.cache or out / "cache",
                       CacheSpec.of(config.sources, config.target, preset.geometry, norm))
    train_ids, val_ids = split["train"], split["validation"]
    entries = _prepare_cache(cache, [cohort.subject(i) for i in train_ids + val_ids],
                             ctx, console)
    train_entries, val_entries = entries[:len(train_ids)], entries[len(train_ids):]
    val_subjects = [cohort.subject(i) for i in val_ids]
    norm.target_scale = float(np.median([e.target_scale for e in train_entries]))
    # What the model is trained on, for the run-time "unlike the training data" check.
    data_summary = combine_summaries([e.summary for e in train_entries],
                                     name=dataset_name(config.data))
    if resume_state is not None:
        lut = IntensityLUT.from_dict(resume_state["baseline"])
    else:
        lut = IntensityLUT.from_stats(LUTStats.total(e.lut_stats() for e in train_entries))
    subset = SubsetValidation(val_entries, config.val_slices, config.seed, config.context)
    lut_subset = subset.evaluate_lut(lut, device) if ctx.is_main else {}
    first_val = val_entries[0]
    centre = first_val.n_slices // 2
    parity = context_stacks(first_val.array("sources"),
                            range(max(0, centre - PARITY_SLICES // 2),
                                  min(first_val.n_slices, centre + PARITY_SLICES // 2)),
                            config.context)

    # Validation predicts at the training batch: what fits for training fits for validation
    # (a larger inference batch multiplied the peak memory at 1 mm for no gain on a CPU).
    eval_batch = config.batch_size // ctx.world
    amp_dtype = resolve_precision(config.precision, device)
    channels_last = device.type == "cuda"
    torch.manual_seed(config.seed)
    net = build_model(preset.unet).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.epochs))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = _loss_fn(config, PerceptualLoss().to(device))
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": -1, "metrics": {}, "subset": {}}
    lut_full: dict[str, float] | None = None
    start_epoch = 0
    if resume_state is not None:
        net.load_state_dict(resume_state["model_state"])
        optimizer.load_state_dict(resume_state["optimizer_state"])
        scheduler.load_state_dict(resume_state["scheduler_state"])
        load_scaler_state(scaler, resume_state.get("scaler_state") or {})
        rank_states = resume_state.get("rng_ranks") or [resume_state["rng"]]
        _set_rng_state(rank_states[ctx.rank] if len(rank_states) == ctx.world
                       else resume_state["rng"])
        history = list(resume_state["history"])
        best = {"subset": {}, **resume_state["best"]}
        lut_full = resume_state.get("lut_full")
        start_epoch = int(resume_state["epoch"]) + 1
    if resume_state is None and ctx.rank:
        torch.manual_seed(config.seed + ctx.rank)  # dropout masks differ between ranks
    model: torch.nn.Module = net
    if ctx.enabled:
        model = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        model = torch.compile(model)

    dataset = CachedSlices(train_entries, context=config.context,
                           transform=build_transform(config.augment), seed=config.seed)
    sampler = EpochSampler(len(dataset), config.slices_per_epoch, config.seed,
                           config.batch_size, ctx.rank, ctx.world)
    workers = resolve_workers(config.workers, device, max(1, _cpu_count() // ctx.world))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sampler.per_rank_batch, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global torch RNG,
        # or a resumed run (fresh iterator) would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(config.seed))

    run_config = {**asdict(config), "resolved_device": str(device), "world_size": ctx.world,
                  "workers_resolved": workers,
                  "precision_resolved": str(amp_dtype or torch.float32).replace("torch.", ""),
                  "split": split, "cache_dir": str(cache.root), "package_version": __version__}
    if ctx.is_main:
        write_json(out / "config.json", run_config, sort_keys=True)
    console.print(f"[bold]{'+'.join(config.sources)} -> {config.target}[/]: "
                  f"{len(dataset)} training slices from {len(train_entries)} subjects, "
                  f"{len(val_entries)} validation subjects ({len(subset)} slices each epoch), "
                  f"preset {config.preset}, context {config.context}, {device} x {ctx.world}, "
                  f"{run_config['precision_resolved']}, {workers} loader worker(s)")
    if ctx.is_main:
        console.print("LUT baseline (validation slice subset): " + _fmt(lut_subset))

    def metadata_for(epoch: int, validation: dict[str, Any]) -> ModelMetadata:
        return ModelMetadata(
            sources=config.sources, target=config.target, normalisation=norm,
            pad_multiple=preset.geometry.multiple, min_size=preset.geometry.min_size,
            context=config.context, preset=config.preset,
            architecture={"name": "unet-pix2pix", **preset.unet.to_dict()},
            training_summary=data_summary,
            training={"data": data_summary["dataset"], "seed": config.seed,
                      "epochs": epoch + 1, "epochs_planned": config.epochs,
                      "subjects": {k: len(v) for k, v in split.items()},
                      "loss": f"{config.perceptual_weight} * VGG16 conv1_1 perceptual + "
                              f"{config.l1_weight} * L1",
                      "global_batch": config.batch_size, "processes": ctx.world,
                      "validation": validation,
                      "augment": AugmentSpec.parse(config.augment).to_dict(),
                      "context": config.context, "patience": config.patience,
                      "best_epoch": best["epoch"]},
            package_version=__version__)

    def validation_record(subset_metrics: dict[str, float], full: dict[str, float] | None
                          ) -> dict[str, Any]:
        """Metadata's validation: 3D volume metrics when known, else the slice subset's."""
        record: dict[str, Any] = {"subset": {"model": subset_metrics, "lut_baseline": lut_subset,
                                             "slices": len(subset)}}
        if full is not None and lut_full is not None:
            record |= {"scope": "volumes", "model": full, "lut_baseline": lut_full}
        else:
            record |= {"scope": "slice subset", "model": subset_metrics,
                       "lut_baseline": lut_subset}
        return record

    def predict_batch(batch: torch.Tensor) -> torch.Tensor:
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            return net(batch).float()

    def run_full_validation() -> tuple[dict[str, float], dict[str, float]]:
        nonlocal lut_full
        rows = full_validation(lambda s: predict_slices(net, s, eval_batch, device), val_subjects,
                               config.sources, config.target, preset.geometry, norm,
                               config.context, lut if lut_full is None else None,
                               ctx.rank, ctx.world)
        rows = [r for part in ctx.all_gather(rows) for r in part]
        if lut_full is None:
            lut_full = mean_metrics([b for _, b in rows])
        return mean_metrics([m for m, _ in rows]), lut_full

    def state_for(epoch: int, validation: dict[str, Any], rng: list[dict[str, Any]]
                  ) -> dict[str, Any]:
        return {"metadata": metadata_for(epoch, validation).to_json(),
                "model_config": preset.unet.to_dict(),
                "model_state": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "train_config": asdict(config), "split": split, "epoch": epoch,
                "history": history, "best": best, "baseline": lut.to_dict(),
                "lut_full": lut_full,
                "optimizer_state": optimizer.state_dict(),
                "scheduler_state": scheduler.state_dict(),
                "scaler_state": scaler.state_dict(), "rng": rng[0], "rng_ranks": rng,
                "parity_slices": torch.from_numpy(parity)}

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if _patience_spent(config, epoch, best):  # a resumed run that had already stopped
            stopped_early = True
            break
        sampler.set_epoch(epoch)
        model.train()
        batches = iter(loader)  # workers start (once, persistent) before any bar is drawn
        running = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        with progress_bar("{task.fields[note]}", console=console) as progress:
            task = progress.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(loader),
                                     note="")
            for step, (source, target) in enumerate(batches, 1):
                source = source.to(device, non_blocking=True)
                target = target.to(device, non_blocking=True)
                if channels_last:
                    source = source.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    output = model(source)
                loss = loss_fn(output, target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                running += loss.detach().double() * len(source)  # stays on the device
                count += len(source)
                if step % config.log_every == 0 or step == len(loader):
                    # The only host sync of the loop: every log_every steps.
                    progress.update(task, completed=step, note=f"loss {float(running) / count:.4f}")
                else:
                    progress.advance(task)
        scheduler.step()
        totals = torch.stack([running.cpu(), torch.tensor(float(count), dtype=torch.float64)])
        if ctx.enabled:
            torch.distributed.all_reduce(totals)
        train_loss = float(totals[0] / totals[1])

        metrics: dict[str, float] = {}
        if ctx.is_main:
            net.eval()
            metrics = subset.evaluate(predict_batch, device, eval_batch)
        full: dict[str, float] | None = None
        last_epoch = epoch == config.epochs - 1
        if last_epoch or (config.full_eval_every and (epoch + 1) % config.full_eval_every == 0):
            full, _ = run_full_validation()
        row: dict[str, Any] = {
            "epoch": epoch + 1, "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": metrics.get(k) for k in METRICS},
            **{f"lut_{k}": lut_subset.get(k) for k in METRICS},
            **{f"full_val_{k}": None if full is None else full[k] for k in METRICS},
            **{f"full_lut_{k}": None if full is None else lut_full[k] for k in METRICS},
            "seconds": time.perf_counter() - started}
        history.append(row)
        stop = False
        rng = ctx.all_gather(_rng_state())
        if ctx.is_main:
            is_best = metrics[SELECTION_METRIC] > best["subset"].get(SELECTION_METRIC, -math.inf)
            if is_best:
                best = {"epoch": epoch + 1, "subset": metrics,
                        "metrics": full if full is not None else metrics}
            row["best_epoch"] = best["epoch"]
            row["epochs_without_improvement"] = epoch + 1 - best["epoch"]
            stop = _patience_spent(config, epoch + 1, best) and epoch + 1 < config.epochs
            row["early_stop"] = int(stop)
            validation = validation_record(metrics, full)
            state = state_for(epoch, validation, rng)
            if is_best:
                save_checkpoint(state, out / "best.pt")
            save_checkpoint(state, out / "last.pt")
            _write_metrics(history, out / "metrics.csv")
            _plot(history, out / "loss.png")
            console.print(f"epoch {epoch + 1}: loss {train_loss:.4f}  subset {_fmt(metrics)}"
                          + (f"  volumes {_fmt(full)}" if full is not None else "")
                          + ("  [green]best[/]" if is_best else ""))
        ctx.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if ctx.broadcast(stop):  # rank 0 decides, every rank stops together
            stopped_early = True
            break

    best = ctx.broadcast(best)
    history = ctx.broadcast(history)
    best_row = history[best["epoch"] - 1]
    if best_row.get("full_val_psnr") is None:
        # The best epoch was not scored on whole volumes: score its weights now.
        last_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        best_state = load_checkpoint(out / "best.pt")
        net.load_state_dict(best_state["model_state"])
        full, lut_metrics = run_full_validation()
        net.load_state_dict(last_weights)
        best_row.update({**{f"full_val_{k}": full[k] for k in METRICS},
                         **{f"full_lut_{k}": lut_metrics[k] for k in METRICS}})
        best["metrics"] = full
        if ctx.is_main:
            best_state["metadata"] = metadata_for(
                best["epoch"] - 1, validation_record(best["subset"], full)).to_json()
            for path, state in ((out / "best.pt", best_state),
                                (out / "last.pt", load_checkpoint(out / "last.pt"))):
                state.update(best=best, history=history, lut_full=lut_full)
                save_checkpoint(state, path)
            _write_metrics(history, out / "metrics.csv")
            _plot(history, out / "loss.png")
        ctx.barrier()
    lut_volumes = lut_full or {}
    if ctx.is_main and stopped_early:
        console.print(f"early stop: no better validation {SELECTION_METRIC} for "
                      f"{config.patience} epochs (best epoch {best['epoch']})")
    if ctx.is_main:
        console.print(f"best epoch {best['epoch']} on whole validation volumes: "
                      f"{_fmt(best['metrics'])} (LUT {_fmt(lut_volumes)})")
    return RunResult(out, out / "best.pt", out / "last.pt", int(best["epoch"]),
                     dict(best["metrics"]), dict(lut_volumes), history,
                     time.perf_counter() - started, dict(best["subset"]), dict(lut_subset),
                     stopped_early)


def _patience_spent(config: TrainConfig, epoch: int, best: dict[str, Any]) -> bool:
    """True when `patience` epochs before epoch `epoch` (0-based) brought no better model.

    A function of the stored best epoch only, so a resumed run stops where the
    uninterrupted one did.
    """
    return config.patience > 0 and best["epoch"] > 0 and epoch - best["epoch"] >= config.patience


def _fmt(metrics: dict[str, float]) -> str:
    if not metrics:
        return "n/a"
    return (f"MAE {metrics['mae']:.4g}  PSNR {metrics['psnr']:.2f} dB  "
            f"SSIM {metrics['ssim']:.4f}")
