"""The U-Net: presets, shapes, output range, and that training steps reduce the loss."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mri2mri.train.model import PRESETS, UNetConfig, build_model, get_preset
from mri2mri.train.perceptual import PerceptualLoss


def test_reference_preset_is_pix2pix_unet_256():
    preset = get_preset("reference", in_channels=2)
    assert preset.unet.levels == 8 and preset.unet.base_filters == 64
    assert preset.geometry.padded_size(99) == 256 and preset.geometry.padded_size(257) == 512
    assert preset.lr == 2e-4
    model = build_model(preset.unet)
    assert model.head is None and isinstance(model.up[-1].block[-1], nn.Tanh)
    # pix2pix unet_256 (norm=batch, no head) has 54.4 M parameters with 3 input channels.
    assert 54.0e6 < sum(p.numel() for p in model.parameters()) < 54.5e6
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 3


def test_small_preset_geometry_fits_demo_volumes():
    preset = get_preset("small")
    assert preset.geometry.multiple % preset.unet.multiple == 0
    assert preset.geometry.padded_size(99) == 112 and preset.geometry.padded_size(117) == 128


@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shape_and_range(channels):
    model = build_model(UNetConfig(in_channels=channels, levels=3, base_filters=4)).eval()
    x = torch.rand(2, channels, 16, 24) * 2 - 1
    y = model(x)
    assert y.shape == (2, 1, 16, 24)
    assert y.abs().max() <= 1


def test_config_round_trip():
    config = PRESETS["small"].unet
    assert UNetConfig.from_dict(config.to_dict()) == config
    assert build_model(config.to_dict()).config == config


def test_invalid_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("huge")


def test_optimisation_step_lowers_loss_on_fixed_batch():
    torch.manual_seed(0)
    model = build_model(UNetConfig(levels=3, base_filters=8, input_skip=True))
    loss_fn = PerceptualLoss()
    x = torch.rand(4, 1, 32, 32) * 2 - 1
    target = -x  # an inverted contrast
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        out = model(x)
        return loss_fn(out, target) + (out - target).abs().mean()

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    assert loss().item() < before.item()


def _interior_of_constant_input(upsample: str) -> torch.Tensor:
    """The network's output in the middle of a constant slice, away from the zero padding
    (weights drawn wide, so that a pattern is large enough to see)."""
    torch.manual_seed(0)
    model = build_model(UNetConfig(levels=3, base_filters=8, input_skip=True,
                                   upsample=upsample)).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.weight.normal_(0.0, 0.3)
        return model(torch.full((1, 1, 96, 96), 0.3))[0, 0, 40:56, 40:56]


def test_resize_upsampling_leaves_no_checkerboard():
    """A stride-2 transposed convolution paints a 2-pixel pattern on a flat input (its
    kernels overlap unevenly); nearest x2 then a 3x3 convolution keeps flat flat."""
    transpose = _interior_of_constant_input("transpose")
    resize = _interior_of_constant_input("resize")
    period_two = (transpose[0::2, 0::2].mean() - transpose[1::2, 1::2].mean()).abs()
    assert period_two > 1e-3
    assert resize.std() < 1e-5 * resize.abs().mean().clamp(min=1e-3)


def test_upsample_mode_round_trips_and_older_configs_read_as_transpose():
    config = UNetConfig(levels=3, base_filters=4, upsample="resize")
    assert UNetConfig.from_dict(config.to_dict()) == config
    older = {k: v for k, v in config.to_dict().items() if k != "upsample"}
    assert UNetConfig.from_dict(older).upsample == "transpose"
    assert build_model(config).config.upsample == "resize"
    assert any(isinstance(m, nn.Upsample) for m in build_model(config).modules())
    assert not any(isinstance(m, nn.ConvTranspose2d) for m in build_model(config).modules())
    with pytest.raises(ValueError, match="upsample must be one of"):
        UNetConfig(upsample="bicubic")
