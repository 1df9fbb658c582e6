"""The training loop: `train(config) -> RunResult`, what `mri2mri-train` runs.

Determinism: the model is initialised from ``torch.manual_seed(seed)``, each
epoch's slice order is a function of (seed, epoch) alone, each item's augmentation
of (seed, epoch, position) (`mri2mri.train.augment`), and the torch RNG
state (dropout) is saved at every epoch end, so on CPU an interrupted run
resumed from ``last.pt`` ends with the same weights as an uninterrupted one.

A run in named steps (`_run`, in this order: the RNG draws depend on it):
`prepare_data` (`mri2mri.train.run_data`: split, slice cache, LUT baseline) ->
`build_training` (`mri2mri.train.updates`: network, optimizer, schedule, loss scaler,
loss) -> `Training.restore` when resuming -> `Training.distribute` (DDP, torch.compile)
-> the loader -> per epoch `_Run.train_epoch` (`train_step` per batch), `validate`,
`record_epoch` (best epoch, checkpoints, metrics.csv) -> `_Run.finish` (the best
weights scored on whole volumes, the OOD references, the final checkpoints) ->
`RunResult`. Every option lives in `TrainConfig` (`mri2mri.train.config`); the step
that needs one reads it there.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from mri2mri.runtime import __version__
from mri2mri.runtime.core.atomic import atomic_path, write_json
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.core.progress import progress_bar
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.runtime.synthesis.disagreement import KEY as DISAGREEMENT
from mri2mri.runtime.synthesis.disagreement import reference

from . import distributed
from .augment import AugmentSpec
from .checkpoint import Checkpoint, RunState, read_checkpoint, save_checkpoint
from .config import TrainConfig, available_cpus, check_resume, resolve_device
from .feature_reference import feature_maps
from .inference import predict_slices
from .ood_reference import cohort_subjects, record_lines, references
from .run_data import RunData, prepare_data, training_loader
from .updates import Training, build_training, pretrained_state, rng_state
from .validation import (
    METRICS,
    full_validation,
    mean_metrics,
    validation_disagreement,
)

#: What `best.pt` is chosen by (higher is better), on the per-epoch validation slice subset.
SELECTION_METRIC = "psnr"


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


def _resume_state(config: TrainConfig, out: Path, resume: bool) -> Checkpoint | None:
    """The run's last.pt when resuming (checked against `config`); refuse to overwrite one."""
    last_path = out / "last.pt"
    if not resume:
        if last_path.exists():
            raise InputError(out, "already holds a run (last.pt); pass --resume to continue it "
                                  "or choose another --out")
        return None
    if not last_path.exists():
        raise InputError(last_path, "nothing to resume (no last.pt in the run directory)")
    state = read_checkpoint(last_path)  # its format checked, an older one converted
    if state.run is None:
        raise InputError(last_path, "cannot resume: a model-only checkpoint (no training run "
                                    "state in it)")
    check_resume(config, state.run.train_config, last_path)
    return state


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
    def from_checkpoint(cls, run: RunState) -> RunProgress:
        return cls(history=list(run.history), best=BestEpoch.from_dict(run.best),
                   lut_full=run.lut_full, next_epoch=run.epoch + 1)


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
        return _run(config, out, device=device, ctx=ctx, resume_state=resume_state,
                    initial=initial, console=console, on_epoch_end=on_epoch_end,
                    started=started)
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)
        torch.backends.cudnn.benchmark = previous_benchmark
        distributed.shutdown(ctx)


def _run(config: TrainConfig, out: Path, *, device: torch.device, ctx: distributed.Dist,
         resume_state: Checkpoint | None, initial: dict[str, torch.Tensor] | None,
         console: Console, on_epoch_end: EpochCallback | None, started: float) -> RunResult:
    """The steps of a run, in order (the RNG draws depend on it)."""
    resumed = resume_state.run if resume_state is not None else None
    data = prepare_data(config, out, device=device, ctx=ctx, console=console, resume=resumed)
    training = build_training(config, device, initial, data.lut)
    progress = RunProgress()
    if resume_state is not None and resumed is not None:
        training.restore(resume_state, ctx)
        progress = RunProgress.from_checkpoint(resumed)
    elif ctx.rank:
        torch.manual_seed(config.seed + ctx.rank)  # dropout masks differ between ranks
    training.distribute(ctx, config.compile)
    run = _Run(config, out, ctx=ctx, console=console, data=data, training=training,
               loader=training_loader(config, data, device, ctx), progress=progress,
               started=started, last=resume_state if ctx.is_main else None)
    run.announce()
    stopped_early = run.train_epochs(on_epoch_end)
    run.finish()
    return run.result(stopped_early)


class _Run:
    """One run's state from epoch to epoch, and the steps that advance and record it."""

    def __init__(self, config: TrainConfig, out: Path, *, ctx: distributed.Dist,
                 console: Console, data: RunData, training: Training,
                 loader: torch.utils.data.DataLoader, progress: RunProgress,
                 started: float, last: Checkpoint | None = None) -> None:
        self.config, self.out, self.ctx, self.console = config, out, ctx, console
        self.data, self.training, self.loader, self.progress = data, training, loader, progress
        self.started = started
        #: Rank 0: last.pt as last written (the resumed one before an epoch is trained); its
        #: tensors are the training's own, which no longer change once the epochs are done.
        self.last = last
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
                   ) -> Checkpoint:
        """The run after `epoch` (0-based), `rng` its processes' RNG states."""
        training, progress = self.training, self.progress
        run = RunState(
            train_config=asdict(self.config), split=self.data.split, epoch=epoch,
            history=progress.history, best=progress.best.to_dict(),
            baseline=self.data.lut.to_dict(), lut_full=progress.lut_full,
            optimizer_state=training.optimizer.state_dict(),
            scheduler_state=training.scheduler.state_dict(),
            scaler_state=training.scaler.state_dict(), rng_ranks=rng)
        return Checkpoint(
            metadata=self.metadata(epoch, validation).to_json(),
            model_config=self.preset.unet.to_dict(),
            model_state={k: v.detach().cpu() for k, v in training.net.state_dict().items()},
            parity_slices=torch.from_numpy(self.data.parity), run=run)

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
            rng = ctx.all_gather(rng_state())
            if ctx.is_main:
                stop = self.record_epoch(epoch, row, metrics=metrics, full=full, rng=rng)
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

    def validate_volumes(self, net: torch.nn.Module | None = None
                         ) -> tuple[dict[str, float], dict[str, float]]:
        """`net`'s (default: the training network's) and the LUT's whole-volume metrics
        (the LUT's measured once)."""
        config, ctx, data, progress = self.config, self.ctx, self.data, self.progress
        net = self.training.net if net is None else net
        rows = full_validation(lambda s: predict_slices(net, s, self.eval_batch, self.device),
                               data.val_subjects, sources=config.sources, target=config.target,
                               geometry=self.preset.geometry, norm=data.norm,
                               context=config.context,
                               lut=data.lut if progress.lut_full is None else None,
                               rank=ctx.rank, world=ctx.world)
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

    def record_epoch(self, epoch: int, row: dict[str, Any], *, metrics: dict[str, float],
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
        self.last = state = self.checkpoint(epoch, self.validation_record(metrics, full), rng)
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

    def finish(self) -> None:
        """The one step after the epochs. The best weights, loaded once from best.pt into a
        network of their own (the training one keeps the last epoch's, last.pt's), are
        scored on whole volumes unless their epoch was, and measured for `mri2mri-run`'s
        model-based checks; then best.pt and last.pt are written in their final form, each
        once (rank 0)."""
        ctx, progress = self.ctx, self.progress
        progress.best = best = ctx.broadcast(progress.best)
        progress.history = ctx.broadcast(progress.history)
        best_row = progress.history[best.epoch - 1]
        unscored = best_row.get("full_val_psnr") is None
        if not (unscored or ctx.is_main):
            ctx.barrier()
            return
        best_state = read_checkpoint(self.out / "best.pt")
        net = self.network(best_state)
        full: dict[str, float] | None = None
        if unscored:  # every rank scores its share
            full, lut_metrics = self.validate_volumes(net)
            best_row.update({**{f"full_val_{k}": full[k] for k in METRICS},
                             **{f"full_lut_{k}": lut_metrics[k] for k in METRICS}})
            best.metrics = full
        if ctx.is_main:
            self.write_final(best_state, full, self.ood_references(net))
        ctx.barrier()

    def network(self, state: Checkpoint) -> torch.nn.Module:
        """A copy of the training network (same device and memory format; no RNG drawn)
        holding `state`'s weights, in eval mode."""
        net = copy.deepcopy(self.training.net)
        net.load_state_dict(state.model_state)
        return net.eval()

    def ood_references(self, net: torch.nn.Module) -> dict[str, Any]:
        """The references of `mri2mri-run`'s model-based checks, measured with `net` (the best
        weights) and printed: the disagreement figure of each validation subject
        (`mri2mri.runtime.synthesis.disagreement`) and the feature, contrast and histogram
        references of the cohort's training and validation subjects, with augmented
        draws (`mri2mri.train.ood_reference`; not the simulated prior's)."""
        data = self.data
        figures = validation_disagreement(
            lambda s: predict_slices(net, s, self.eval_batch, self.device),
            data.val_entries, self.config.context)
        records = {}
        if figures:  # no validation foreground: nothing to compare inputs with
            records[DISAGREEMENT] = reference(figures)
            self.console.print(f"disagreement under small input changes (validation "
                               f"subjects): {', '.join(f'{f:.4f}' for f in figures)}; "
                               f"threshold {records[DISAGREEMENT]['threshold']:.4g}")
        split = data.split
        records |= references(
            lambda s: feature_maps(net, s, self.eval_batch, self.device),
            self.metadata(self.progress.best.epoch - 1, {}),
            cohort_subjects(str(self.config.data), split), seed=self.config.seed,
            drawn_from={k: len(split.get(k, [])) for k in ("train", "validation")})
        for line in record_lines(records):
            self.console.print(line)
        return records

    def write_final(self, best_state: Checkpoint, full: dict[str, float] | None,
                    records: dict[str, Any]) -> None:
        """Rank 0: best.pt and last.pt in their final form, each written once: with the
        best epoch's whole-volume scores when `finish` measured them (`full`), and the
        OOD `records` in the metadata of the best weights (last.pt's too when they are
        the same epoch's)."""
        progress, last = self.progress, self.last
        if last is None or last.run is None or best_state.run is None:
            raise ValueError("finishing a run that saved no checkpoint")
        if full is not None:
            best_state.metadata = self.metadata(
                progress.best.epoch - 1,
                self.validation_record(progress.best.subset, full)).to_json()
            for run in (best_state.run, last.run):
                run.best, run.history = progress.best.to_dict(), progress.history
                run.lut_full = progress.lut_full
        same = last.run.epoch == best_state.run.epoch
        for state in ((best_state, last) if same else (best_state,)) if records else ():
            meta = state.model_metadata(self.out / "best.pt")
            meta.ood = {**meta.ood, **records}
            state.metadata = meta.to_json()
        save_checkpoint(best_state, self.out / "best.pt")
        save_checkpoint(last, self.out / "last.pt")
        if full is not None:
            self.write_history()

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
