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
