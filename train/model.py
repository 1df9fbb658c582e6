"""The generator: a pix2pix-style 2D U-Net, one architecture for every preset.

Each level halves the slice with a 4x4 stride-2 convolution (LeakyReLU 0.2
before it, batch-norm after it) and the decoder mirrors it with 4x4 stride-2
transposed convolutions and skip connections, ending in tanh (the [-1, 1]
normalised target range). ``upsample="resize"`` replaces each transposed
convolution by a nearest-neighbour doubling and a 3x3 convolution: a stride-2
transposed convolution's kernels overlap unevenly, which prints a 2-pixel
checkerboard on flat bright regions (the ventricles of a synthesized T2w);
resize-then-convolve cannot (Odena et al., Distill 2016). Batch-norm runs with
its running statistics in eval mode, so ONNX export folds it into the preceding
convolution. ``reference`` is the architecture of Isola et al.'s ``unet_256``;
``small`` is the same code with fewer levels and filters, fast enough to train on a
laptop CPU.

With ``lut_sources`` the network is a correction of the look-up-table baseline
(`LUTResidual`): the LUT's estimate is computed inside the network from the centre
slice's sources, given to the U-Net as an extra input channel and added to its
output, whose last convolution starts at zero. Training starts from the LUT's answer,
and the exported ONNX model carries the table, so the runtime needs nothing new.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from mri2mri.runtime.imaging.slicing import SliceGeometry

from .baseline import BINS_1D, BINS_JOINT, HIGH, LOW, IntensityLUT

UPSAMPLING = ("transpose", "resize")


def check_upsample(mode: str) -> str:
    """`mode` if it is one of `UPSAMPLING`; a ValueError naming the choices otherwise."""
    if mode not in UPSAMPLING:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLING)} (got {mode!r})")
    return mode


@dataclass(frozen=True)
class UNetConfig:
    """Architecture hyper-parameters; stored in checkpoints and ONNX metadata."""

    in_channels: int = 1
    out_channels: int = 1
    levels: int = 4
    base_filters: int = 32
    max_filters: int = 512
    #: Dropout in the decoder blocks nearest the bottleneck (pix2pix: 0.5 in three of them).
    dropout: float = 0.0
    dropout_blocks: int = 3
    #: Concatenate the input to the full-resolution decoder output before a small conv head.
    #: pix2pix has no full-resolution skip (its first skip is at half resolution); this
    #: gives a voxel-exact path and makes short CPU trainings converge much faster.
    input_skip: bool = False
    #: LUT residual: the output is the LUT estimate from these many sources' centre slices
    #: (the first `lut_sources` source-major channel groups) plus the U-Net's; 0: off.
    lut_sources: int = 0
    #: Decoder upsampling: "transpose" (pix2pix's 4x4 stride-2 transposed convolution) or
    #: "resize" (nearest-neighbour x2, then a 3x3 convolution: no checkerboard).
    upsample: str = "transpose"

    def __post_init__(self) -> None:
        check_upsample(self.upsample)
        if self.levels < 2:
            raise ValueError("a U-Net needs at least 2 levels")
        if self.in_channels < 1 or self.out_channels < 1 or self.base_filters < 1:
            raise ValueError("channel counts must be positive")
        if self.lut_sources < 0 or (self.lut_sources and (
                self.in_channels % self.lut_sources
                or (self.in_channels // self.lut_sources) % 2 == 0)):
            raise ValueError(f"lut_sources {self.lut_sources} does not divide "
                             f"{self.in_channels} input channels into 2K+1 context slices")

    @property
    def multiple(self) -> int:
        """Slice sides must be a multiple of this (each level halves them)."""
        return 2 ** self.levels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Preset:
    """A named architecture and the slice geometry it is trained on."""

    name: str
    unet: UNetConfig
    geometry: SliceGeometry
    #: Default Adam learning rate: the method's 2e-4 for every preset.
    lr: float = 2e-4


PRESETS: dict[str, Preset] = {
    # 4 levels: 2 mm demo volumes (~99x117 in-plane) pad to 112x128, 1 mm ones to 208x240.
    "small": Preset("small", UNetConfig(levels=4, base_filters=32, max_filters=256,
                                        input_skip=True),
                    SliceGeometry(multiple=16, min_size=0)),
    # pix2pix unet_256: 8 levels, 64 filters, dropout 0.5, on (at least) 256x256 slices.
    "reference": Preset("reference", UNetConfig(levels=8, base_filters=64, max_filters=512,
                                                dropout=0.5),
                        SliceGeometry(multiple=256, min_size=256)),
}


def get_preset(name: str, in_channels: int = 1, lut_sources: int = 0,
               upsample: str | None = None) -> Preset:
    """The named preset with the given number of input channels (one per source and context
    slice), as a LUT residual of `lut_sources` sources when that is not 0, and with the
    decoder's `upsample` mode when given (None: the preset's)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    preset = PRESETS[name]
    unet = replace(preset.unet, in_channels=in_channels, lut_sources=lut_sources)
    if upsample is not None:
        unet = replace(unet, upsample=upsample)
    return replace(preset, unet=unet)


def _filters(config: UNetConfig, level: int) -> int:
    return min(config.base_filters * 2 ** level, config.max_filters)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, outermost: bool, innermost: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [] if outermost else [nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(cin, cout, 4, stride=2, padding=1, bias=outermost or innermost))
        if not (outermost or innermost):  # pix2pix: no norm on the first and the 1x1 bottleneck
            layers.append(nn.BatchNorm2d(cout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


def _upsampling(cin: int, cout: int, mode: str, bias: bool) -> list[nn.Module]:
    """The decoder's x2 upsampling layers (`UNetConfig.upsample`)."""
    if mode == "resize":
        return [nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(cin, cout, 3, padding=1, bias=bias)]
    return [nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1, bias=bias)]


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, *, outermost: bool, dropout: float,
                 upsample: str = "transpose") -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.ReLU(), *_upsampling(cin, cout, upsample, outermost)]
        if outermost:
            layers.append(nn.Tanh())
        else:
            layers.append(nn.BatchNorm2d(cout))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class _Head(nn.Module):
    """Full-resolution head: [decoder features, input] -> 3x3 conv -> ReLU -> 1x1 conv -> tanh."""

    def __init__(self, features: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(features + in_channels, features, 3, padding=1),
                                   nn.ReLU(), nn.Conv2d(features, out_channels, 1), nn.Tanh())

    def forward(self, features: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.block(torch.cat([torch.relu(features), x], dim=1))


class UNet(nn.Module):
    """(N, C_in, H, W) in [-1, 1] -> (N, C_out, H, W) in [-1, 1]; H, W multiples of 2^levels.

    With ``config.lut_sources`` the encoder also sees the LUT channel and the output is
    the LUT's estimate plus the network's (`LUTResidual`)."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        n = config.levels
        self.lut = LUTResidual(config.lut_sources, config.in_channels) \
            if config.lut_sources else None
        in_channels = config.in_channels + (1 if self.lut is not None else 0)
        chans = [in_channels] + [_filters(config, i) for i in range(n)]
        self.down = nn.ModuleList(
            _Down(chans[i], chans[i + 1], outermost=i == 0, innermost=i == n - 1)
            for i in range(n))
        ups = []
        for i in reversed(range(n)):  # decoder block i produces level i's resolution
            cin = chans[i + 1] if i == n - 1 else 2 * chans[i + 1]
            last = i == 0 and not config.input_skip  # pix2pix: tanh straight after the last up
            cout = config.out_channels if last else (config.base_filters if i == 0 else chans[i])
            drop = config.dropout if 0 < n - 1 - i <= config.dropout_blocks else 0.0
            ups.append(_Up(cin, cout, outermost=last, dropout=drop, upsample=config.upsample))
        self.up = nn.ModuleList(ups)
        self.head = (_Head(config.base_filters, in_channels, config.out_channels)
                     if config.input_skip else None)
        self.apply(_init_weights)
        if self.lut is not None:  # start from the LUT's own answer
            last = [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
            nn.init.zeros_(last[-1].weight)
            if last[-1].bias is not None:
                nn.init.zeros_(last[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The output and the bottleneck: the innermost encoder block's output (N, C, h, w),
        what the feature out-of-distribution check measures
        (`mri2mri.runtime.synthesis.features`; ONNX exports it as a second output)."""
        estimate = None
        if self.lut is not None:
            estimate = self.lut(x)
            x = torch.cat([x, estimate], dim=1)
        inputs, skips = x, []
        for block in self.down:
            x = block(x)
            skips.append(x)
        bottleneck = skips.pop()  # feeds the decoder directly
        for block in self.up:
            x = block(x)
            if skips:
                x = torch.cat([x, skips.pop()], dim=1)
        out = x if self.head is None else self.head(x, inputs)
        return (out if estimate is None else out + estimate), bottleneck


class LUTResidual(nn.Module):
    """The LUT baseline (`mri2mri.train.baseline.IntensityLUT`) as a network layer.

    Its tables are buffers (saved in checkpoints, constants in ONNX), filled by `set`
    from the LUT the trainer fits on the training subjects; binning and the joint
    table's fallback to the first source's table are `IntensityLUT.predict`'s.
    """

    def __init__(self, sources: int, in_channels: int) -> None:
        super().__init__()
        self.low, self.high, self.bins_1d, self.bins_joint = LOW, HIGH, BINS_1D, BINS_JOINT
        slices = in_channels // sources  # 2K + 1 context slices per source
        self.centres = [c * slices + slices // 2 for c in range(sources)]
        self.register_buffer("table", torch.zeros(BINS_1D))
        self.register_buffer("joint", torch.zeros(BINS_JOINT ** sources) if sources > 1
                             else None)

    def _bin(self, values: torch.Tensor, bins: int) -> torch.Tensor:
        pos = (values.clamp(self.low, self.high) - self.low) * (bins / (self.high - self.low))
        return pos.long().clamp(max=bins - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) network input -> (N, 1, H, W) LUT estimate of the target."""
        first = x[:, self.centres[0]:self.centres[0] + 1]
        estimate = self.table[self._bin(first, self.bins_1d)]
        if self.joint is None:
            return estimate
        key = torch.zeros_like(first, dtype=torch.long)
        for c in self.centres:
            key = key * self.bins_joint + self._bin(x[:, c:c + 1], self.bins_joint)
        joint = self.joint[key]
        return torch.where(torch.isnan(joint), estimate, joint)

    @torch.no_grad()
    def set(self, lut: IntensityLUT) -> None:
        """Copy the tables of an `IntensityLUT` fitted on this network's kind of input."""
        self.table.copy_(torch.as_tensor(lut.table, dtype=self.table.dtype))
        if self.joint is not None:
            if lut.joint is None or lut.joint.size != self.joint.numel():
                raise ValueError("the LUT has no joint table for these sources")
            self.joint.copy_(torch.as_tensor(lut.joint, dtype=self.joint.dtype))


def _init_weights(module: nn.Module) -> None:
    """pix2pix initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_model(config: UNetConfig | dict[str, Any]) -> UNet:
    """A fresh U-Net from a config (or its dict form, as stored in checkpoints)."""
    if isinstance(config, dict):
        config = UNetConfig.from_dict(config)
    return UNet(config)
