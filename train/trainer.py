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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from mri2mri.runtime import __version__
from mri2mri.runtime.atomic import atomic_path, write_json
from mri2mri.runtime.cohort import Cohort
from mri2mri.runtime.contrasts import canonical_contrast
from mri2mri.runtime.errors import InputError
from mri2mri.runtime.metadata import ModelMetadata, Normalisation
from mri2mri.runtime.preprocess import restore_volume
from mri2mri.runtime.progress import progress_bar
from mri2mri.runtime.slicing import stack_context

from .augment import AugmentSpec, build_transform
from .baseline import IntensityLUT
from .checkpoint import load_checkpoint, save_checkpoint
from .dataset import EpochItems, SliceBank, SubjectData, epoch_order, load_subjects
from .inference import predict_slices
from .metrics import volume_metrics
from .model import build_model, get_preset
from .perceptual import PerceptualLoss

METRICS = ("mae", "psnr", "ssim")
PARITY_SLICES = 4
#: What `best.pt` is chosen by (higher is better).
SELECTION_METRIC = "psnr"


@dataclass
class TrainConfig:
    """Everything a run is defined by; defaults are tuned for the 2 mm demo on 2 CPU cores."""

    data: str
    sources: list[str]
    target: str
    out: str
    preset: str = "small"
    epochs: int = 12
    slices_per_epoch: int = 600
    batch_size: int = 8
    #: Adam learning rate; None: the preset's (reference 2e-4 as in the method, small 1e-3).
    lr: float | None = None
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    seed: int = 0
    workers: int = 0
    device: str = "auto"
    threads: int = 0  # 0: all CPU cores this process may use
    # -- generalisation (issue 16): augmentation, 2.5D context, early stopping --
    #: `mri2mri.train.augment` specification, stored in canonical form ("none": off).
    augment: str = "none"
    #: Neighbouring slices on each side fed as extra channels per source.
    context: int = 0
    #: Stop after this many epochs without a better validation PSNR (0: never).
    patience: int = 0

    def __post_init__(self) -> None:
        self.sources = [canonical_contrast(s) for s in self.sources]
        self.target = canonical_contrast(self.target)
        if self.target in self.sources:
            raise ValueError(f"target {self.target} is also a source")
        if len(set(self.sources)) != len(self.sources):
            raise ValueError("a source contrast is given twice")
        for name in ("epochs", "slices_per_epoch", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.l1_weight < 0 or self.perceptual_weight < 0 or \
                self.l1_weight + self.perceptual_weight == 0:
            raise ValueError("loss weights must be >= 0 and not both 0")
        preset = get_preset(self.preset)  # validates the name
        if self.lr is None:
            self.lr = preset.lr
        if self.lr <= 0:
            raise ValueError("the learning rate must be positive")
        self.augment = AugmentSpec.parse(self.augment).to_string()
        if self.context < 0 or self.patience < 0:
            raise ValueError("context and patience must be >= 0")

    #: Fields that may differ when resuming (they do not change the result on CPU).
    RESUMABLE_CHANGES = ("epochs", "workers", "device", "threads", "data", "patience")


@dataclass
class RunResult:
    """What a finished run produced."""

    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    #: True when `patience` epochs passed without improvement before `epochs` were done.
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise InputError(None, f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in METRICS}


def evaluate(predict: Callable[[np.ndarray], np.ndarray], subjects: list[SubjectData]
             ) -> dict[str, float]:
    """Mean MAE/PSNR/SSIM over subjects: whole restored volumes, inside the source's foreground,
    against the target on the source grid, in the target's own intensity scale.

    The prediction is restored with the subject's own target scale: an MR image's global
    gain is arbitrary and not predictable from the sources, so the metrics measure the
    contrast translation, not the scanner gain.
    """
    rows = []
    for s in subjects:
        volume = restore_volume(predict(s.prepared.slices), s.prepared, s.target_scale)
        rows.append(volume_metrics(volume, s.target_volume, s.mask_volume))
    return _mean_metrics(rows)


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _lr_factor(epochs: int) -> Callable[[int], float]:
    """pix2pix schedule: constant for the first half, then linear decay towards zero."""
    keep = epochs // 2

    def factor(epoch: int) -> float:
        return 1.0 if epoch < keep else 1.0 - (epoch - keep) / (epochs - keep + 1)

    return factor


def _write_metrics(history: list[dict[str, float]], out: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(out, overwrite=True) as tmp:
        tmp.write_text(buffer.getvalue())


def _plot(history: list[dict[str, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [r["train_loss"] for r in history], "o-")
    ax1.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax2.plot(epochs, [r["val_psnr"] for r in history], "o-", label="model")
    ax2.plot(epochs, [r["lut_psnr"] for r in history], "--", label="LUT baseline")
    ax2.set(xlabel="epoch", ylabel="PSNR (dB)", title="validation")
    ax2.legend()
    fig.tight_layout()
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _check_resume(config: TrainConfig, stored: dict[str, Any], path: Path) -> None:
    for key, value in asdict(config).items():
        if key in TrainConfig.RESUMABLE_CHANGES or key == "out":
            continue
        if stored.get(key) != value:
            raise InputError(path, f"cannot resume: the run used {key}={stored.get(key)!r}, "
                                   f"now {value!r}")
    if config.epochs < stored["epochs"]:
        raise InputError(path, f"cannot resume with fewer epochs ({config.epochs}) than the "
                               f"run was started with ({stored['epochs']})")


def _loss_fn(config: TrainConfig, perceptual: PerceptualLoss
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = output.new_zeros(())
        if config.perceptual_weight:
            total = total + config.perceptual_weight * perceptual(output, target)
        if config.l1_weight:
            total = total + config.l1_weight * (output.float() - target).abs().mean()
        return total

    return loss


def train(config: TrainConfig, *, resume: bool = False, console: Console | None = None,
          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Train a model on a cohort; write last.pt, best.pt, metrics.csv, loss.png, config.json.

    `on_epoch_end(epoch, row)` is called after each epoch's checkpoint is written.
    """
    started = time.perf_counter()
    console = console or Console(stderr=True)
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

    device = resolve_device(config.device)
    threads = config.threads or _cpu_count()
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        return _run(config, out, device, resume_state, console, on_epoch_end, started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def _run(config: TrainConfig, out: Path, device: torch.device,
         resume_state: dict[str, Any] | None, console: Console,
         on_epoch_end: Callable[[int, dict[str, float]], None] | None,
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
    preset = get_preset(config.preset,
                        in_channels=len(config.sources) * (2 * config.context + 1))
    norm = Normalisation()
    with console.status("loading subjects") as status:
        def note(subject_id: str) -> None:
            status.update(f"loading {subject_id}")

        train_subjects = load_subjects([cohort.subject(i) for i in split["train"]],
                                       config.sources, config.target, preset.geometry, norm, note)
        val_subjects = load_subjects([cohort.subject(i) for i in split["validation"]],
                                     config.sources, config.target, preset.geometry, norm, note)
    norm.target_scale = float(np.median([s.target_scale for s in train_subjects]))
    bank = SliceBank(train_subjects, context=config.context)
    transform = build_transform(config.augment)
    lut = IntensityLUT.fit([s.prepared.slices for s in train_subjects],
                           [s.target_slices for s in train_subjects])
    lut_metrics = evaluate(lut.predict, val_subjects)
    middle = val_subjects[0].prepared.slices
    centre = len(middle) // 2
    parity = stack_context(middle, config.context)[
        max(0, centre - PARITY_SLICES // 2): centre + PARITY_SLICES // 2].copy()

    torch.manual_seed(config.seed)
    model = build_model(preset.unet).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.5, 0.999))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config.epochs))
    use_amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = _loss_fn(config, PerceptualLoss().to(device))
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": -1, "metrics": {}}
    start_epoch = 0
    if resume_state is not None:
        model.load_state_dict(resume_state["model_state"])
        optimizer.load_state_dict(resume_state["optimizer_state"])
        scheduler.load_state_dict(resume_state["scheduler_state"])
        scaler.load_state_dict(resume_state["scaler_state"])
        _set_rng_state(resume_state["rng"])
        history = list(resume_state["history"])
        best = dict(resume_state["best"])
        start_epoch = int(resume_state["epoch"]) + 1

    run_config = {**asdict(config), "resolved_device": str(device),
                  "split": split, "package_version": __version__}
    write_json(out / "config.json", run_config, sort_keys=True)
    console.print(f"[bold]{'+'.join(config.sources)} -> {config.target}[/]: "
                  f"{len(bank)} training slices from {len(train_subjects)} subjects, "
                  f"{len(val_subjects)} validation subjects, preset {config.preset}, {device}")
    console.print("LUT baseline (validation): " + _fmt(lut_metrics))

    def metadata_for(epoch: int, metrics: dict[str, float]) -> ModelMetadata:
        return ModelMetadata(
            sources=config.sources, target=config.target, normalisation=norm,
            pad_multiple=preset.geometry.multiple, min_size=preset.geometry.min_size,
            context=config.context, preset=config.preset,
            architecture={"name": "unet-pix2pix", **preset.unet.to_dict()},
            training={"data": str(Path(config.data).resolve()), "seed": config.seed,
                      "epochs": epoch + 1, "epochs_planned": config.epochs,
                      "subjects": {k: len(v) for k, v in split.items()},
                      "loss": f"{config.perceptual_weight} * VGG16 conv1_1 perceptual + "
                              f"{config.l1_weight} * L1",
                      "validation": {"model": metrics, "lut_baseline": lut_metrics},
                      "augment": AugmentSpec.parse(config.augment).to_dict(),
                      "context": config.context, "patience": config.patience,
                      "best_epoch": best["epoch"]},
            package_version=__version__)

    stopped_early = False
    for epoch in range(start_epoch, config.epochs):
        if _patience_spent(config, epoch, best):
            stopped_early = True
            break
        model.train()
        order = epoch_order(len(bank), config.slices_per_epoch, config.seed, epoch)
        items = EpochItems(bank, order, config.seed, epoch, transform)
        loader = torch.utils.data.DataLoader(items, batch_size=config.batch_size,
                                             num_workers=config.workers,
                                             pin_memory=device.type == "cuda")
        total, count = 0.0, 0
        with progress_bar("loss {task.fields[loss]:.4f}", console=console) as progress:
            task = progress.add_task(f"epoch {epoch + 1}/{config.epochs}", total=len(loader),
                                     loss=math.nan)
            for source, target in loader:
                source, target = source.to(device), target.to(device)
                with torch.autocast(device.type, enabled=use_amp):
                    output = model(source)
                loss = loss_fn(output, target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                total += float(loss.detach()) * len(source)
                count += len(source)
                progress.update(task, advance=1, loss=total / count)
        scheduler.step()
        metrics = evaluate(lambda s: predict_slices(model, stack_context(s, config.context), 32,
                                                    device), val_subjects)
        row = {"epoch": epoch + 1, "train_loss": total / count,
               "lr": optimizer.param_groups[0]["lr"],
               **{f"val_{k}": v for k, v in metrics.items()},
               **{f"lut_{k}": v for k, v in lut_metrics.items()},
               "seconds": time.perf_counter() - started}
        history.append(row)
        is_best = metrics[SELECTION_METRIC] > best["metrics"].get(SELECTION_METRIC, -math.inf)
        if is_best:
            best = {"epoch": epoch + 1, "metrics": metrics}
        row["best_epoch"] = best["epoch"]
        row["epochs_without_improvement"] = epoch + 1 - best["epoch"]
        stop = _patience_spent(config, epoch + 1, best) and epoch + 1 < config.epochs
        row["early_stop"] = int(stop)
        state = {"metadata": metadata_for(epoch, metrics).to_json(),
                 "model_config": preset.unet.to_dict(),
                 "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                 "train_config": asdict(config), "split": split, "epoch": epoch,
                 "history": history, "best": best, "baseline": lut.to_dict(),
                 "optimizer_state": optimizer.state_dict(),
                 "scheduler_state": scheduler.state_dict(),
                 "scaler_state": scaler.state_dict(), "rng": _rng_state(),
                 "parity_slices": torch.from_numpy(parity)}
        if is_best:
            save_checkpoint(state, out / "best.pt")
        save_checkpoint(state, out / "last.pt")
        _write_metrics(history, out / "metrics.csv")
        _plot(history, out / "loss.png")
        console.print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}  model {_fmt(metrics)}"
                      + ("  [green]best[/]" if is_best else ""))
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
        if stop:
            stopped_early = True
            break

    if stopped_early:
        console.print(f"early stop: no better validation {SELECTION_METRIC} for "
                      f"{config.patience} epochs (best epoch {best['epoch']})")
    return RunResult(out, out / "best.pt", out / "last.pt", int(best["epoch"]),
                     dict(best["metrics"]), lut_metrics, history,
                     time.perf_counter() - started, stopped_early)


def _patience_spent(config: TrainConfig, epoch: int, best: dict[str, Any]) -> bool:
    """True when `patience` epochs before epoch `epoch` (0-based) brought no better model.

    A function of the stored best epoch only, so a resumed run stops where the
    uninterrupted one did.
    """
    return config.patience > 0 and best["epoch"] > 0 and epoch - best["epoch"] >= config.patience


def _fmt(metrics: dict[str, float]) -> str:
    return (f"MAE {metrics['mae']:.4g}  PSNR {metrics['psnr']:.2f} dB  "
            f"SSIM {metrics['ssim']:.4f}")
