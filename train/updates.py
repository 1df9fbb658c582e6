"""The network and what updates it: `build_training` -> `Training` (network, optimizer,
learning-rate schedule, loss scaler, loss), one `train_step`, and resuming them.

Determinism: the network is initialised from ``torch.manual_seed(seed)`` (then, when
fine-tuning, from `pretrained_state`: the seed's draws stay the same), and
`Training.restore` sets back every process's torch RNG state with the weights and the
optimizer's, so a resumed CPU run ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mri2mri.runtime.core.errors import InputError

from . import distributed
from .baseline import IntensityLUT
from .checkpoint import Checkpoint, read_checkpoint
from .config import TrainConfig, resolve_precision
from .model import UNetConfig, build_model
from .perceptual import PerceptualLoss

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def load_scaler_state(scaler: torch.amp.GradScaler, state: dict[str, Any]) -> None:
    """Resume a GradScaler across devices and precisions.

    A disabled scaler (CPU, fp32, bf16) saves ``{}``; an enabled one (fp16 on CUDA) its
    scale and growth tracker. Loading ``{}`` into an enabled scaler is an error in
    torch, so an enabled scaler with nothing to resume starts afresh, and a disabled one
    ignores whatever was saved.
    """
    if scaler.is_enabled() and state:
        scaler.load_state_dict(state)


def rng_state() -> dict[str, Any]:
    """This process's torch RNG state (CPU, and every CUDA device's)."""
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


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *,
               scaler: torch.amp.GradScaler, loss_fn: LossFn, source: torch.Tensor,
               target: torch.Tensor, device: torch.device, amp_dtype: torch.dtype | None = None,
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
        return train_step(self.model, self.optimizer, scaler=self.scaler, loss_fn=self.loss_fn,
                          source=source, target=target, device=self.device,
                          amp_dtype=self.amp_dtype, channels_last=self.channels_last)

    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """The network's float32 output for a validation batch, at the training precision."""
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.amp_dtype,
                            enabled=self.amp_dtype is not None):
            return self.net(batch).float()

    def restore(self, checkpoint: Checkpoint, ctx: distributed.Dist) -> None:
        """Continue from a run's checkpoint: weights, optimizer, schedule, loss scale, RNG
        (each process its own; the first process's when the number of processes changed)."""
        run = checkpoint.run
        if run is None:
            raise ValueError("a model-only checkpoint has no run to continue")
        self.net.load_state_dict(checkpoint.model_state)
        self.optimizer.load_state_dict(run.optimizer_state)
        self.scheduler.load_state_dict(run.scheduler_state)
        load_scaler_state(self.scaler, run.scaler_state)
        ranks = run.rng_ranks
        _set_rng_state(ranks[ctx.rank] if len(ranks) == ctx.world else ranks[0])

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
    state = read_checkpoint(path)
    meta = state.model_metadata(path)
    wanted = "+".join(config.sources) + "->" + config.target
    if meta.task != wanted:
        raise InputError(path, f"--init-weights: the checkpoint is a {meta.task} model; this "
                               f"run trains {wanted}")
    ours = config.model_preset().unet.to_dict()
    theirs = UNetConfig.from_dict(state.model_config).to_dict()  # older: fewer keys
    if theirs != ours:
        differ = sorted(k for k in ours if ours[k] != theirs[k])
        raise InputError(path, "--init-weights: the checkpoint's network differs from this "
                               f"run's ({', '.join(differ)}): use the same --preset and "
                               "--context")
    return state.model_state
