"""The training loop: `train(config) -> RunResult`, what `mri2mri-train` runs.

Determinism: the model is initialised from ``torch.manual_seed(seed)``, each
epoch's slice order is a function of (seed, epoch) alone, each item's augmentation
of (seed, epoch, position) (`mri2mri.train.augment`), and the torch RNG
state (dropout) is saved at every epoch end, so on CPU an interrupted run
resumed from ``last.pt`` ends with the same weights as an uninterrupted one.

A run in named steps (`_run`, in this order: the RNG draws depend on it):
`prepare_data` (split, slice cache, LUT baseline) -> `build_training` (network,
optimizer, schedule, loss scaler, loss) -> `Training.restore` when resuming ->
`Training.distribute` (DDP, torch.compile) -> the loader -> per epoch `_Run.train_epoch`
(`train_step` per batch), `validate`, `record_epoch` (best epoch, checkpoints,
metrics.csv) -> `score_best_on_volumes` -> `record_ood_references` -> `RunResult`. Every
option lives in `TrainConfig`; the step that needs one reads it there.
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

from mri2mri.data.cohort import Cohort, Subject
from mri2mri.runtime import __version__
from mri2mri.runtime.bids.names import dataset_name
from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.engine.devices import TORCH_DEVICES, check_device
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.synthesis import features
from mri2mri.runtime.synthesis.disagreement import KEY as DISAGREEMENT
from mri2mri.runtime.synthesis.disagreement import reference
from mri2mri.runtime.synthesis.ood import combine_summaries

from . import distributed
from . import prior as simulated
from .augment import AugmentSpec, build_transform
from .baseline import IntensityLUT, LUTStats
from .cache import CachedSubject, CacheSpec, SliceCache
from .checkpoint import checkpoint_metadata, load_checkpoint, save_checkpoint
from .dataset import CachedSlices, EpochSampler, context_stacks
from .feature_reference import feature_maps, record_line
from .inference import predict_slices
from .model import Preset, UNetConfig, build_model, get_preset
from .perceptual import PerceptualLoss
from .validation import (
    METRICS,
    SUBSET_SLICES,
    SubsetValidation,
    cohort_feature_vectors,
    full_validation,
    mean_metrics,
    validation_disagreement,
)

PARITY_SLICES = 4
#: What `best.pt` is chosen by (higher is better), on the per-epoch validation slice subset.
SELECTION_METRIC = "psnr"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
    #: A checkpoint whose network weights start the run (fine-tuning a pretrained model,
    #: e.g. one trained on the simulated cohort); None: random initialisation.
    init_weights: str | None = None
    #: Simulated subjects (`mri2mri.train.prior`) trained on beside the cohort's own, at its
    #: voxel size; 0: none. Contrasts the simulator does not image (angio) train without.
    simulated_subjects: int = 6
    #: The augmentation of the simulated subjects (`augment` acts on the cohort's own).
    simulated_augment: str = "strong,randomize=0.7"
    #: Intensity anchor (`Normalisation.named`): percentile (the foreground's 99.5th
    #: percentile) or median (tissue at the same value on every scanner; docs/training.md).
    normalisation: str = "percentile"
    #: The network corrects the LUT baseline (`mri2mri.train.model.LUTResidual`): its output
    #: is added to the LUT's estimate, which it also sees as an input channel.
    lut_residual: bool = False

    #: What a run saved before an option existed ran with (resuming such a run keeps it,
    #: and the leave-one-out benchmark's fold fingerprints leave the option out at it).
    BEFORE_OPTION = {"simulated_subjects": 0, "normalisation": "percentile",
                     "lut_residual": False}

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
        for name in ("context", "full_eval_every", "threads", "patience", "simulated_subjects"):
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
        self.simulated_augment = AugmentSpec.parse(self.simulated_augment).to_string()
        Normalisation.named(self.normalisation)  # validates the name

    #: Fields that may differ when resuming (they do not change the weights on CPU).
    RESUMABLE_CHANGES = ("epochs", "workers", "device", "threads", "data", "cache",
                         "full_eval_every", "precision", "compile", "log_every", "patience")

    @property
    def in_channels(self) -> int:
        """Network input channels: each source with its 2.5D context slices."""
        return len(self.sources) * (2 * self.context + 1)

    def model_preset(self) -> Preset:
        """The architecture and slice geometry, for this config's input channels."""
        return get_preset(self.preset, in_channels=self.in_channels,
                          lut_sources=len(self.sources) if self.lut_residual else 0)


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


def available_cpus() -> int:
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


def stored_value(stored: dict[str, Any], key: str) -> Any:
    """A saved run's `TrainConfig` value of `key`; for a run saved before the option
    existed, what it ran with (`TrainConfig.BEFORE_OPTION`, else the default)."""
    if key in stored:
        return stored[key]
    if key in TrainConfig.BEFORE_OPTION:
        return TrainConfig.BEFORE_OPTION[key]
    return next(f.default for f in fields(TrainConfig) if f.name == key)


def _check_resume(config: TrainConfig, stored: dict[str, Any], path: Path) -> None:
    for key, value in asdict(config).items():
        if key in TrainConfig.RESUMABLE_CHANGES or key == "out":
            continue
        if stored_value(stored, key) != value:
            raise InputError(path, f"cannot resume: the run used {key}="
                                   f"{stored_value(stored, key)!r}, now {value!r}")
    if config.epochs < stored["epochs"]:
        raise InputError(path, f"cannot resume with fewer epochs ({config.epochs}) than the "
                               f"run was started with ({stored['epochs']})")


def _resume_state(config: TrainConfig, out: Path, resume: bool) -> dict[str, Any] | None:
    """The run's last.pt when resuming (checked against `config`); refuse to overwrite one."""
    last_path = out / "last.pt"
    if not resume:
        if last_path.exists():
            raise InputError(out, "already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another --out")
        return None
    state = load_checkpoint(last_path) if last_path.exists() else None
    if state is None:
        raise InputError(last_path, "nothing to resume (no last.pt in the run directory)")
    _check_resume(config, state["train_config"], last_path)
    return state


# ---- the model and its updates ----------------------------------------------------------

def build_loss(config: TrainConfig, device: torch.device) -> LossFn:
    """The training loss: `perceptual_weight` * VGG16 conv1_1 perceptual + `l1_weight` * L1."""
    perceptual = PerceptualLoss().to(device)

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = output.new_zeros((), dtype=torch.float32)
        if config.perceptual_weight:
            total = total + config.perceptual_weight * perceptual(output, target)
        if config.l1_weight:
            total = total + config.l1_weight * (output.float() - target).abs().mean()
        return total

    return loss


def build_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam at the config's learning rate with pix2pix's betas."""
    return torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.5, 0.999))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scaler: torch.amp.GradScaler, loss_fn: LossFn, source: torch.Tensor,
               target: torch.Tensor, *, device: torch.device, amp_dtype: torch.dtype | None = None,
               channels_last: bool = False) -> torch.Tensor:
    """One optimizer step on one batch: forward (autocast to `amp_dtype`), loss, backward,
    step. Returns the batch's loss, detached and left on the device (reading it syncs)."""
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
    return loss.detach()


@dataclass
class Training:
    """The network and what updates it; `build_training` makes one from a `TrainConfig`."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    loss_fn: LossFn
    device: torch.device
    #: The autocast dtype, or None for fp32.
    amp_dtype: torch.dtype | None
    #: What the steps run: `net`, or `net` wrapped for DDP and torch.compile (`distribute`).
    model: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if self.model is None:
            self.model = self.net

    @property
    def channels_last(self) -> bool:
        return self.device.type == "cuda"

    def step(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """`train_step` on this training's model, optimizer and precision."""
        return train_step(self.model, self.optimizer, self.scaler, self.loss_fn, source, target,
                          device=self.device, amp_dtype=self.amp_dtype,
                          channels_last=self.channels_last)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's float32 output for a validation batch, at the training precision."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            return self.net(batch).float()

    def restore(self, state: dict[str, Any], ctx: distributed.Dist) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, loss scale, RNG."""
        self.net.load_state_dict(state["model_state"])
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scheduler.load_state_dict(state["scheduler_state"])
        load_scaler_state(self.scaler, state.get("scaler_state") or {})
        rank_states = state.get("rng_ranks") or [state["rng"]]
        _set_rng_state(rank_states[ctx.rank] if len(rank_states) == ctx.world else state["rng"])

    def distribute(self, ctx: distributed.Dist, compile: bool) -> None:
        """Wrap the network for the steps: DDP under torchrun, then torch.compile if asked."""
        model: torch.nn.Module = self.net
        if ctx.enabled:
            model = torch.nn.parallel.DistributedDataParallel(
                self.net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if compile:
            model = torch.compile(model)
        self.model = model


def build_training(config: TrainConfig, device: torch.device,
                   initial: dict[str, torch.Tensor] | None = None,
                   lut: IntensityLUT | None = None) -> Training:
    """The network initialised from ``torch.manual_seed(config.seed)`` (then from `initial`
    weights, if given: the seed's draws stay the same; a LUT-residual network then takes
    this run's `lut`), its optimizer, learning-rate schedule, loss scaler (fp16 only) and
    loss, on `device`."""
    amp_dtype = resolve_precision(config.precision, device)
    torch.manual_seed(config.seed)
    net = build_model(config.model_preset().unet)
    if initial is not None:
        net.load_state_dict(initial)
    if net.lut is not None:
        if lut is None:
            raise ValueError("a LUT-residual network needs the run's LUT")
        net.lut.set(lut)
    net = net.to(device)
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.epochs))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    return Training(net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                    loss_fn=build_loss(config, device), device=device, amp_dtype=amp_dtype)


def pretrained_state(config: TrainConfig) -> dict[str, torch.Tensor]:
    """The network weights of `config.init_weights`, checked to fit this run's network.

    Same task (contrasts), same architecture and input channels: anything else would
    start from weights that mean something else, so it is an `InputError` naming the file.
    """
    path = Path(config.init_weights)
    state = load_checkpoint(path)
    meta = checkpoint_metadata(state, path)
    wanted = "+".join(config.sources) + "->" + config.target
    if meta.task != wanted:
        raise InputError(path, f"--init-weights: the checkpoint is a {meta.task} model; this "
                               f"run trains {wanted}")
    ours = config.model_preset().unet.to_dict()
    theirs = UNetConfig.from_dict(state["model_config"]).to_dict()  # older: fewer keys
    if theirs != ours:
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        raise InputError(path, "--init-weights: the checkpoint's network differs from this "
                               f"run's ({', '.join(differ)}): use the same --preset and "
                               "--context")
    return state["model_state"]


def build_loader(dataset: CachedSlices, sampler: EpochSampler, workers: int,
                 device: torch.device, seed: int) -> torch.utils.data.DataLoader:
    """The training DataLoader: `workers` persistent processes, pinned memory on CUDA."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=sampler.per_rank_batch, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global torch RNG,
        # or a resumed run (fresh iterator) would diverge from an uninterrupted one.
        generator=torch.Generator().manual_seed(seed))


def _training_loader(config: TrainConfig, data: RunData, device: torch.device,
                     ctx: distributed.Dist) -> torch.utils.data.DataLoader:
    """This process's share of each epoch's slices (the cohort's and the simulated prior's),
    augmented as the config says."""
    own, sim = build_transform(config.augment), build_transform(config.simulated_augment)
    dataset = CachedSlices(data.train_entries + data.prior_entries, context=config.context,
                           seed=config.seed,
                           subject_transforms=[own] * len(data.train_entries)
                           + [sim] * len(data.prior_entries))
    sampler = EpochSampler(len(dataset), config.slices_per_epoch, config.seed,
                           config.batch_size, ctx.rank, ctx.world)
    workers = resolve_workers(config.workers, device, max(1, available_cpus() // ctx.world))
    return build_loader(dataset, sampler, workers, device, config.seed)


# ---- the data -----------------------------------------------------------------------------

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


def _split(config: TrainConfig, cohort: Cohort, resume_state: dict[str, Any] | None
           ) -> dict[str, list[str]]:
    """Subject ids per split among those with every contrast the run needs."""
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


def prepare_data(config: TrainConfig, out: Path, device: torch.device, ctx: distributed.Dist,
                 console: Console, resume_state: dict[str, Any] | None = None) -> RunData:
    """Split the cohort, cache its slices, fit (or, resuming, reload) the LUT baseline."""
    cohort = Cohort.discover(config.data)
    split = _split(config, cohort, resume_state)
    if config.batch_size % ctx.world:
        raise InputError(None, f"--batch-size {config.batch_size} (the global batch) must be a "
                               f"multiple of the number of processes ({ctx.world})")
    norm = Normalisation.named(config.normalisation)
    cache = SliceCache(config.cache or out / "cache", CacheSpec.of(
        config.sources, config.target, config.model_preset().geometry, norm))
    train_ids, val_ids = split["train"], split["validation"]
    sim_subjects, sim_info = _simulated_prior(config, [cohort.subject(i) for i in train_ids],
                                              Path(cache.root).parent, ctx, console)
    entries = _prepare_cache(cache, [cohort.subject(i) for i in train_ids + val_ids]
                             + sim_subjects, ctx, console)
    n_own = len(train_ids) + len(val_ids)
    train_entries, val_entries = entries[:len(train_ids)], entries[len(train_ids):n_own]
    norm.target_scale = float(np.median([e.target_scale for e in train_entries]))
    summary = combine_summaries([e.summary for e in train_entries],
                                name=dataset_name(config.data))
    if resume_state is not None:
        lut = IntensityLUT.from_dict(resume_state["baseline"])
    else:
        lut = IntensityLUT.from_stats(LUTStats.total(e.lut_stats() for e in train_entries))
    subset = SubsetValidation(val_entries, config.val_slices, config.seed, config.context)
    return RunData(split=split, cache=cache, train_entries=train_entries,
                   val_entries=val_entries, val_subjects=[cohort.subject(i) for i in val_ids],
                   norm=norm, summary=summary, lut=lut, subset=subset,
                   lut_subset=subset.evaluate_lut(lut, device) if ctx.is_main else {},
                   parity=_parity_slices(val_entries[0], config.context),
                   split_rule=cohort.split_rule(), prior_entries=entries[n_own:], prior=sim_info)


def _simulated_prior(config: TrainConfig, train_subjects: list[Subject], root: Path,
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
    subjects = simulated.prior_subjects(config.simulated_subjects, config.seed, resolution,
                                        folder, console, contrasts,
                                        jobs=max(1, available_cpus() // ctx.world))
    if ctx.enabled and ctx.is_main:
        ctx.barrier()
    return subjects, {"subjects": len(subjects), "resolution_mm": resolution,
                      "augment": config.simulated_augment}


# ---- the run ------------------------------------------------------------------------------

@dataclass
class BestEpoch:
    """The epoch whose weights are best.pt, chosen by `SELECTION_METRIC` on the slice subset.

    Checkpoints store it as a dict with the same keys (`to_dict` / `from_dict`).
    """

    #: 1-based; -1 before the first epoch.
    epoch: int = -1
    #: Whole-volume (3D) validation metrics when that epoch was scored so, else `subset`.
    metrics: dict[str, float] = field(default_factory=dict)
    #: The slice-subset metrics that chose it.
    subset: dict[str, float] = field(default_factory=dict)

    def improved_by(self, subset: dict[str, float]) -> bool:
        return subset[SELECTION_METRIC] > self.subset.get(SELECTION_METRIC, -math.inf)

    def patience_spent(self, patience: int, epoch: int) -> bool:
        """True when `patience` epochs before epoch `epoch` (0-based) brought no better model.

        A function of the stored best epoch only, so a resumed run stops where the
        uninterrupted one did.
        """
        return patience > 0 and self.epoch > 0 and epoch - self.epoch >= patience

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "metrics": self.metrics, "subset": self.subset}

    @classmethod
    def from_dict(cls, stored: dict[str, Any]) -> BestEpoch:
        # Checkpoints written before "subset" existed lack it.
        return cls(epoch=stored["epoch"], metrics=stored["metrics"],
                   subset=stored.get("subset", {}))


@dataclass
class RunProgress:
    """What carries over from epoch to epoch besides the weights (and into checkpoints)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best: BestEpoch = field(default_factory=BestEpoch)
    #: The LUT baseline on whole validation volumes, once measured.
    lut_full: dict[str, float] | None = None
    #: The first epoch (0-based) still to train.
    next_epoch: int = 0

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> RunProgress:
        return cls(history=list(state["history"]), best=BestEpoch.from_dict(state["best"]),
                   lut_full=state.get("lut_full"), next_epoch=int(state["epoch"]) + 1)


EpochCallback = Callable[[int, dict[str, Any]], None]


def train(config: TrainConfig, *, resume: bool = False, console: Console | None = None,
          on_epoch_end: EpochCallback | None = None) -> RunResult:
    """Train a model on a cohort; write last.pt, best.pt, metrics.csv, loss.png, config.json.

    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes
    files and prints. `on_epoch_end(epoch, row)` is called after each epoch's
    checkpoint is written.
    """
    started = time.perf_counter()
    ctx = distributed.from_environment()
    console = console or Console(stderr=True, quiet=not ctx.is_main)
    out = Path(config.out)
    resume_state = _resume_state(config, out, resume)
    # Checked before anything is written: a wrong file fails at once. A resumed run
    # continues from its own weights and no longer needs the file.
    initial = pretrained_state(config) \
        if config.init_weights is not None and resume_state is None else None
    out.mkdir(parents=True, exist_ok=True)

    device = resolve_device(config.device, ctx.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    distributed.init(ctx, device)
    threads = config.threads or max(1, available_cpus() // ctx.world)
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_benchmark = torch.backends.cudnn.benchmark
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    else:
        torch.backends.cudnn.benchmark = True  # fixed slice sizes: pick the fastest kernels
    try:
        return _run(config, out, device, ctx, resume_state, initial, console, on_epoch_end,
                    started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.backends.cudnn.benchmark = previous_benchmark
        distributed.shutdown(ctx)


def _run(config: TrainConfig, out: Path, device: torch.device, ctx: distributed.Dist,
         resume_state: dict[str, Any] | None, initial: dict[str, torch.Tensor] | None,
         console: Console,
         on_epoch_end: EpochCallback | None, started: float) -> RunResult:
    """The steps of a run, in order (the RNG draws depend on it)."""
    data = prepare_data(config, out, device, ctx, console, resume_state)
    training = build_training(config, device, initial, data.lut)
    progress = RunProgress()
    if resume_state is not None:
        training.restore(resume_state, ctx)
        progress = RunProgress.from_checkpoint(resume_state)
    elif ctx.rank:
        torch.manual_seed(config.seed + ctx.rank)  # dropout masks differ between ranks
    training.distribute(ctx, config.compile)
    run = _Run(config, out, ctx, console, data, training,
               _training_loader(config, data, device, ctx), progress, started)
    run.announce()
    stopped_early = run.train_epochs(on_epoch_end)
    run.score_best_on_volumes()
    run.record_ood_references()
    return run.result(stopped_early)


class _Run:
    """One run's state from epoch to epoch, and the steps that advance and record it."""

    def __init__(self, config: TrainConfig, out: Path, ctx: distributed.Dist,
                 console: Console, data: RunData, training: Training,
                 loader: torch.utils.data.DataLoader, progress: RunProgress,
                 started: float) -> None:
        self.config, self.out, self.ctx, self.console = config, out, ctx, console
        self.data, self.training, self.loader, self.progress = data, training, loader, progress
        self.started = started
        self.preset = config.model_preset()
        self.device = training.device
        # Validation predicts at the training batch: what fits for training fits for
        # validation (a larger inference batch multiplied the peak memory at 1 mm for no
        # gain on a CPU).
        self.eval_batch = config.batch_size // ctx.world

    # -- set-up and records --

    def announce(self) -> None:
        """Write config.json (rank 0) and print what the run is."""
        config, ctx, data = self.config, self.ctx, self.data
        precision = str(self.training.amp_dtype or torch.float32).replace("torch.", "")
        workers = self.loader.num_workers
        simulated = f" + {len(data.prior_entries)} simulated" if data.prior_entries else ""
        run_config = {**asdict(config), "resolved_device": str(self.device),
                      "world_size": ctx.world, "workers_resolved": workers,
                      "precision_resolved": precision, "split": data.split,
                      "cache_dir": str(data.cache.root), "package_version": __version__}
        if ctx.is_main:
            write_json(self.out / "config.json", run_config, sort_keys=True)
        self.console.print(
            f"[bold]{'+'.join(config.sources)} -> {config.target}[/]: "
            f"{len(self.loader.dataset)} training slices from {len(data.train_entries)} "
            f"subjects{simulated}, {len(data.val_entries)} validation subjects "
            f"({len(data.subset)} slices "
            f"each epoch), preset {config.preset}, context {config.context}, {self.device} x "
            f"{ctx.world}, {precision}, {workers} loader worker(s)")
        if ctx.is_main:
            self.console.print("LUT baseline (validation slice subset): "
                               + _fmt(data.lut_subset))

    def metadata(self, epoch: int, validation: dict[str, Any]) -> ModelMetadata:
        """The model metadata of the weights after `epoch` (0-based)."""
        config, preset = self.config, self.preset
        return ModelMetadata(
            sources=config.sources, target=config.target, normalisation=self.data.norm,
            pad_multiple=preset.geometry.multiple, min_size=preset.geometry.min_size,
            context=config.context, preset=config.preset,
            architecture={"name": "unet-pix2pix", **preset.unet.to_dict()},
            training_summary=self.data.summary,
            training={"data": self.data.summary["dataset"], "seed": config.seed,
                      "epochs": epoch + 1, "epochs_planned": config.epochs,
                      "subjects": {k: len(v) for k, v in self.data.split.items()},
                      "split_rule": self.data.split_rule,
                      "loss": f"{config.perceptual_weight} * VGG16 conv1_1 perceptual + "
                              f"{config.l1_weight} * L1",
                      "global_batch": config.batch_size, "processes": self.ctx.world,
                      "validation": validation,
                      "augment": AugmentSpec.parse(config.augment).to_dict(),
                      "context": config.context, "patience": config.patience,
                      "init_weights": config.init_weights,
                      "simulated_prior": self.data.prior or None,
                      "best_epoch": self.progress.best.epoch},
            package_version=__version__)

    def validation_record(self, subset_metrics: dict[str, float],
                          full: dict[str, float] | None) -> dict[str, Any]:
        """Metadata's validation: 3D volume metrics when known, else the slice subset's."""
        lut_subset, lut_full = self.data.lut_subset, self.progress.lut_full
        record: dict[str, Any] = {"subset": {"model": subset_metrics, "lut_baseline": lut_subset,
                                             "slices": len(self.data.subset)}}
        if full is not None and lut_full is not None:
            record |= {"scope": "volumes", "model": full, "lut_baseline": lut_full}
        else:
            record |= {"scope": "slice subset", "model": subset_metrics,
                       "lut_baseline": lut_subset}
        return record

    def checkpoint(self, epoch: int, validation: dict[str, Any], rng: list[dict[str, Any]]
                   ) -> dict[str, Any]:
        """Everything a checkpoint holds after `epoch` (0-based): see `checkpoint`'s keys."""
        training, progress = self.training, self.progress
        return {"metadata": self.metadata(epoch, validation).to_json(),
                "model_config": self.preset.unet.to_dict(),
                "model_state": {k: v.detach().cpu() for k, v in training.net.state_dict().items()},
                "train_config": asdict(self.config), "split": self.data.split, "epoch": epoch,
                "history": progress.history, "best": progress.best.to_dict(),
                "baseline": self.data.lut.to_dict(), "lut_full": progress.lut_full,
                "optimizer_state": training.optimizer.state_dict(),
                "scheduler_state": training.scheduler.state_dict(),
                "scaler_state": training.scaler.state_dict(), "rng": rng[0], "rng_ranks": rng,
                "parity_slices": torch.from_numpy(self.data.parity)}

    def write_history(self) -> None:
        _write_metrics(self.progress.history, self.out / "metrics.csv")
        _plot(self.progress.history, self.out / "loss.png")

    # -- the epochs --

    def train_epochs(self, on_epoch_end: EpochCallback | None) -> bool:
        """Train from the next epoch to the last; True when early stopping ended the run."""
        config, ctx, progress = self.config, self.ctx, self.progress
        for epoch in range(progress.next_epoch, config.epochs):
            if progress.best.patience_spent(config.patience, epoch):
                return True  # a resumed run that had already stopped
            train_loss = self.train_epoch(epoch)
            metrics, full = self.validate(epoch)
            row = self.epoch_row(epoch, train_loss, metrics, full)
            progress.history.append(row)
            stop = False
            rng = ctx.all_gather(_rng_state())
            if ctx.is_main:
                stop = self.record_epoch(epoch, row, metrics, full, rng)
            ctx.barrier()
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
            if ctx.broadcast(stop):  # rank 0 decides, every rank stops together
                return True
        return False

    def train_epoch(self, epoch: int) -> float:
        """One pass over this epoch's slices; the mean training loss over every process."""
        training, loader, device = self.training, self.loader, self.device
        loader.sampler.set_epoch(epoch)
        training.model.train()
        batches = iter(loader)  # workers start (once, persistent) before any bar is drawn
        running = torch.zeros((), dtype=torch.float64, device=device)
        count = 0
        with progress_bar("{task.fields[note]}", console=self.console) as bar:
            task = bar.add_task(f"epoch {epoch + 1}/{self.config.epochs}", total=len(loader),
                                note="")
            for step, (source, target) in enumerate(batches, 1):
                loss = training.step(source, target)
                running += loss.double() * len(source)  # stays on the device
                count += len(source)
                if step % self.config.log_every == 0 or step == len(loader):
                    # The only host sync of the loop: every log_every steps.
                    bar.update(task, completed=step, note=f"loss {float(running) / count:.4f}")
                else:
                    bar.advance(task)
        training.scheduler.step()
        totals = torch.stack([running.cpu(), torch.tensor(float(count), dtype=torch.float64)])
        if self.ctx.enabled:
            torch.distributed.all_reduce(totals)
        return float(totals[0] / totals[1])

    def validate(self, epoch: int) -> tuple[dict[str, float], dict[str, float] | None]:
        """The slice-subset metrics (rank 0) and, on whole-volume epochs, the 3D metrics."""
        config = self.config
        metrics: dict[str, float] = {}
        if self.ctx.is_main:
            self.training.net.eval()
            metrics = self.data.subset.evaluate(self.training.predict, self.device,
                                                self.eval_batch)
        full: dict[str, float] | None = None
        last_epoch = epoch == config.epochs - 1
        if last_epoch or (config.full_eval_every and (epoch + 1) % config.full_eval_every == 0):
            full, _ = self.validate_volumes()
        return metrics, full

    def validate_volumes(self) -> tuple[dict[str, float], dict[str, float]]:
        """The network's and the LUT's whole-volume metrics (the LUT's measured once)."""
        config, ctx, data, progress = self.config, self.ctx, self.data, self.progress
        net = self.training.net
        rows = full_validation(lambda s: predict_slices(net, s, self.eval_batch, self.device),
                               data.val_subjects, config.sources, config.target,
                               self.preset.geometry, data.norm, config.context,
                               data.lut if progress.lut_full is None else None,
                               ctx.rank, ctx.world)
        rows = [r for part in ctx.all_gather(rows) for r in part]
        if progress.lut_full is None:
            progress.lut_full = mean_metrics([b for _, b in rows])
        return mean_metrics([m for m, _ in rows]), progress.lut_full

    def epoch_row(self, epoch: int, train_loss: float, metrics: dict[str, float],
                  full: dict[str, float] | None) -> dict[str, Any]:
        """The epoch's metrics.csv row (rank 0 adds the best-epoch columns)."""
        lut_full = self.progress.lut_full
        return {
            "epoch": epoch + 1, "train_loss": train_loss,
            "lr": self.training.optimizer.param_groups[0]["lr"],
            **{f"val_{k}": metrics.get(k) for k in METRICS},
            **{f"lut_{k}": self.data.lut_subset.get(k) for k in METRICS},
            **{f"full_val_{k}": None if full is None else full[k] for k in METRICS},
            **{f"full_lut_{k}": None if full is None else lut_full[k] for k in METRICS},
            "seconds": time.perf_counter() - self.started}

    def record_epoch(self, epoch: int, row: dict[str, Any], metrics: dict[str, float],
                     full: dict[str, float] | None, rng: list[dict[str, Any]]) -> bool:
        """Rank 0: update the best epoch, write the checkpoints, metrics and plot, print the
        epoch; True when patience is spent."""
        config, progress = self.config, self.progress
        is_best = progress.best.improved_by(metrics)
        if is_best:
            progress.best = BestEpoch(epoch=epoch + 1, subset=metrics,
                                      metrics=full if full is not None else metrics)
        row["best_epoch"] = progress.best.epoch
        row["epochs_without_improvement"] = epoch + 1 - progress.best.epoch
        stop = progress.best.patience_spent(config.patience, epoch + 1) and \
            epoch + 1 < config.epochs
        row["early_stop"] = int(stop)
        state = self.checkpoint(epoch, self.validation_record(metrics, full), rng)
        if is_best:
            save_checkpoint(state, self.out / "best.pt")
        save_checkpoint(state, self.out / "last.pt")
        self.write_history()
        self.console.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  subset "
                           f"{_fmt(metrics)}"
                           + (f"  volumes {_fmt(full)}" if full is not None else "")
                           + ("  [green]best[/]" if is_best else ""))
        return stop

    # -- the end --

    def score_best_on_volumes(self) -> None:
        """Score the best epoch's weights on whole volumes if it was not; update the files."""
        ctx, out, net = self.ctx, self.out, self.training.net
        self.progress.best = best = ctx.broadcast(self.progress.best)
        self.progress.history = history = ctx.broadcast(self.progress.history)
        best_row = history[best.epoch - 1]
        if best_row.get("full_val_psnr") is not None:
            return
        last_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        best_state = load_checkpoint(out / "best.pt")
        net.load_state_dict(best_state["model_state"])
        full, lut_metrics = self.validate_volumes()
        net.load_state_dict(last_weights)
        best_row.update({**{f"full_val_{k}": full[k] for k in METRICS},
                         **{f"full_lut_{k}": lut_metrics[k] for k in METRICS}})
        best.metrics = full
        if ctx.is_main:
            best_state["metadata"] = self.metadata(
                best.epoch - 1, self.validation_record(best.subset, full)).to_json()
            for path, state in ((out / "best.pt", best_state),
                                (out / "last.pt", load_checkpoint(out / "last.pt"))):
                state.update(best=best.to_dict(), history=history,
                             lut_full=self.progress.lut_full)
                save_checkpoint(state, path)
            self.write_history()
        ctx.barrier()

    def record_ood_references(self) -> None:
        """The references of `mri2mri-run`'s model-based checks, measured with the best
        weights and written (rank 0) into best.pt's metadata, and last.pt's when they are
        the same weights: the disagreement figure of each validation subject
        (`mri2mri.runtime.synthesis.disagreement`) and the feature statistics of the
        cohort's training and validation subjects (`mri2mri.runtime.synthesis.features`;
        not the simulated prior's, see `mri2mri.train.feature_reference`)."""
        if self.ctx.is_main:
            self._write_ood_references()
        self.ctx.barrier()

    def _write_ood_references(self) -> None:
        out, net, data = self.out, self.training.net, self.data
        best_state = load_checkpoint(out / "best.pt")
        last_weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
        net.load_state_dict(best_state["model_state"])
        figures = validation_disagreement(
            lambda s: predict_slices(net, s, self.eval_batch, self.device),
            data.val_entries, self.config.context)
        vectors = cohort_feature_vectors(
            lambda s: feature_maps(net, s, self.eval_batch, self.device),
            data.train_entries + data.val_entries, self.config.context)
        net.load_state_dict(last_weights)
        records = {}
        if figures:  # no validation foreground: nothing to compare inputs with
            records[DISAGREEMENT] = reference(figures)
        if sum(len(v) > 0 for v in vectors) >= 2:
            records[features.KEY] = features.reference(vectors, drawn_from={
                "train": len(data.train_entries), "validation": len(data.val_entries)})
        if not records:
            return
        last_state = load_checkpoint(out / "last.pt")
        states = [(out / "best.pt", best_state)]
        if last_state["epoch"] == best_state["epoch"]:
            states.append((out / "last.pt", last_state))
        for path, state in states:
            meta = checkpoint_metadata(state, path)
            meta.ood = {**meta.ood, **records}
            state["metadata"] = meta.to_json()
            save_checkpoint(state, path)
        if figures:
            self.console.print(f"disagreement under small input changes (validation "
                               f"subjects): {', '.join(f'{f:.4f}' for f in figures)}; "
                               f"threshold {records[DISAGREEMENT]['threshold']:.4g}")
        if features.KEY in records:
            self.console.print(record_line(records[features.KEY]))

    def result(self, stopped_early: bool) -> RunResult:
        """Print the outcome (rank 0) and return it."""
        best, lut_volumes = self.progress.best, self.progress.lut_full or {}
        if self.ctx.is_main and stopped_early:
            self.console.print(f"early stop: no better validation {SELECTION_METRIC} for "
                               f"{self.config.patience} epochs (best epoch {best.epoch})")
        if self.ctx.is_main:
            self.console.print(f"best epoch {best.epoch} on whole validation volumes: "
                               f"{_fmt(best.metrics)} (LUT {_fmt(lut_volumes)})")
        return RunResult(
            out_dir=self.out, best_checkpoint=self.out / "best.pt",
            last_checkpoint=self.out / "last.pt", best_epoch=int(best.epoch),
            best_metrics=dict(best.metrics), baseline_metrics=dict(lut_volumes),
            history=self.progress.history, seconds=time.perf_counter() - self.started,
            best_subset_metrics=dict(best.subset),
            baseline_subset_metrics=dict(self.data.lut_subset), stopped_early=stopped_early)


def _fmt(metrics: dict[str, float]) -> str:
    if not metrics:
        return "n/a"
    return (f"MAE {metrics['mae']:.4g}  PSNR {metrics['psnr']:.2f} dB  "
            f"SSIM {metrics['ssim']:.4f}")
