"""The perceptual loss uses the shipped VGG16 conv1_1 weights, mapped as their README says."""

from __future__ import annotations

import numpy as np
import torch

from mri2mri.train.perceptual import (
    WEIGHTS_SHA256,
    PerceptualLoss,
    load_vgg16_conv1_1,
    weights_path,
    weights_sha256,
)

PUBLISHED_SHA256 = "0be8add6e44eeede7279bc9cf83f1710b8db93b7deb8f7d2958892d7d44a3ccd"


def test_shipped_weights_checksum():
    assert weights_path().is_file()
    assert weights_sha256() == PUBLISHED_SHA256 == WEIGHTS_SHA256
    readme = (weights_path().parent / "README.md").read_text()
    assert "CC BY 4.0" in readme and PUBLISHED_SHA256 in readme


def test_loss_uses_the_shipped_weights():
    arrays = load_vgg16_conv1_1()
    loss = PerceptualLoss()
    assert arrays["weight"].shape == (64, 3, 3, 3)
    np.testing.assert_array_equal(loss.weight.numpy(), arrays["weight"])
    np.testing.assert_array_equal(loss.bias.numpy(), arrays["bias"])
    np.testing.assert_array_equal(loss.mean.numpy().ravel(), arrays["mean_rgb_0_255"])
    # Published spot check of the Keras block1_conv1 kernel (README): first value in RGB order.
    assert abs(float(arrays["weight"][0, 0, 0, 0]) - 0.4800154) < 1e-6


def test_input_mapping_is_caffe_rgb():
    """[-1, 1] grey -> 0..255 in R=G=B minus the ImageNet mean, conv with padding 1, ReLU."""
    arrays = load_vgg16_conv1_1()
    loss = PerceptualLoss()
    x = torch.rand(1, 1, 8, 8) * 2 - 1
    grey = (x.numpy()[0, 0] + 1) * 127.5
    rgb = np.stack([grey - m for m in arrays["mean_rgb_0_255"]])  # (3, 8, 8)
    # Interior pixel (4, 4): explicit 3x3 correlation.
    patch = rgb[:, 3:6, 3:6]
    expected = np.maximum((arrays["weight"] * patch).sum(axis=(1, 2, 3)) + arrays["bias"], 0)
    np.testing.assert_allclose(loss.features(x)[0, :, 4, 4].numpy(), expected, rtol=1e-4,
                               atol=1e-3)


def test_zero_for_identical_positive_otherwise():
    loss = PerceptualLoss()
    torch.manual_seed(0)
    a = torch.rand(2, 1, 16, 16) * 2 - 1
    assert loss(a, a.clone()).item() == 0.0
    assert loss(a, a * 0.5).item() > 0
    assert loss(a, torch.roll(a, 1, dims=3)).item() > 0
