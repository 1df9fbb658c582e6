"""What a run is: `TrainConfig`, and how its options resolve on this machine.

Every option lives in `TrainConfig`; the step that needs one reads it there. The
`resolve_*` functions turn the "auto" values into what this process uses (device,
loader workers, autocast dtype) and `available_cpus` is the count they share out.
`stored_value` and `check_resume` read the config a saved run ran with, options added
since included (`TrainConfig.BEFORE_OPTION`).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.devices import TORCH_DEVICES, check_device
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.metadata import Normalisation

from .augment import AugmentSpec
from .model import Preset, check_upsample, get_preset
from .validation import SUBSET_SLICES

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
    #: Decoder upsampling (`mri2mri.train.model.UNetConfig.upsample`): transpose (pix2pix)
    #: or resize (nearest x2 then a 3x3 convolution, no checkerboard artefact).
    upsample: str = "transpose"

    #: What a run saved before an option existed ran with (resuming such a run keeps it,
    #: and the leave-one-out benchmark's fold fingerprints leave the option out at it).
    BEFORE_OPTION = {"simulated_subjects": 0, "normalisation": "percentile",
                     "lut_residual": False, "upsample": "transpose"}

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
        check_upsample(self.upsample)

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
                          lut_sources=len(self.sources) if self.lut_residual else 0,
                          upsample=self.upsample)


def stored_value(stored: dict[str, Any], key: str) -> Any:
    """A saved run's `TrainConfig` value of `key`; for a run saved before the option
    existed, what it ran with (`TrainConfig.BEFORE_OPTION`, else the default)."""
    if key in stored:
        return stored[key]
    if key in TrainConfig.BEFORE_OPTION:
        return TrainConfig.BEFORE_OPTION[key]
    return next(f.default for f in fields(TrainConfig) if f.name == key)


def check_resume(config: TrainConfig, stored: dict[str, Any], path: Path) -> None:
    """Refuse to resume the run saved in `path` (its config `stored`) with another that
    would train different weights."""
    for key, value in asdict(config).items():
        if key in TrainConfig.RESUMABLE_CHANGES or key == "out":
            continue
        if stored_value(stored, key) != value:
            raise InputError(path, f"cannot resume: the run used {key}="
                                   f"{stored_value(stored, key)!r}, now {value!r}")
    if config.epochs < stored["epochs"]:
        raise InputError(path, f"cannot resume with fewer epochs ({config.epochs}) than the "
                               f"run was started with ({stored['epochs']})")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of a `--device` name (auto: CUDA when present)."""
    name = check_device(name, TORCH_DEVICES)  # the one validator every command uses
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(None, "--device cuda requested but no CUDA device is available")
    return torch.device("cuda", local_rank) if name == "cuda" else torch.device("cpu")


def available_cpus() -> int:
    """The logical CPUs this process may run on: its affinity mask (a container or
    `taskset` may allow fewer than the machine has), not physical cores; what torch's
    threads, the loader workers and the cache jobs are shared out from."""
    counter = getattr(os, "process_cpu_count", None)  # Python 3.13+: the affinity mask
    if counter is not None:
        return counter() or 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity mask (macOS, Windows)
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
