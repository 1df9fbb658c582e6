"""Perceptual loss of the method: distance between VGG16 conv1_1+ReLU activations.

The weights are the ImageNet-trained first layer of VGG16 shipped with the
package (`weights/vgg16_conv1_1.npz`, CC BY 4.0, see its README), so training
works offline. That layer expects a Caffe-style RGB image in 0..255 minus the
ImageNet mean; a single-channel slice in the normalised [-1, 1] range is mapped
to 0..255 and repeated into the three colour channels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

WEIGHTS_FILE = "vgg16_conv1_1.npz"
WEIGHTS_SHA256 = "0be8add6e44eeede7279bc9cf83f1710b8db93b7deb8f7d2958892d7d44a3ccd"
#: Activations are divided by this so the loss is in the units of the [-1, 1] images
#: (the layer sees 0..255 inputs, i.e. 127.5 per normalised unit).
FEATURE_SCALE = 127.5


def weights_path() -> Path:
    """Location of the packaged VGG16 conv1_1 weights."""
    return Path(__file__).resolve().parent / "weights" / WEIGHTS_FILE


def weights_sha256(path: Path | None = None) -> str:
    return hashlib.sha256((path or weights_path()).read_bytes()).hexdigest()


def load_vgg16_conv1_1(path: Path | None = None) -> dict[str, np.ndarray]:
    """The shipped arrays: weight (64,3,3,3) RGB, bias (64,), mean_rgb_0_255 (3,)."""
    with np.load(path or weights_path()) as data:
        return {k: np.asarray(data[k], dtype=np.float32)
                for k in ("weight", "bias", "mean_rgb_0_255")}


class PerceptualLoss(nn.Module):
    """mean |phi(output) - phi(target)| / 127.5, phi = ReLU(conv1_1(rgb(x))).

    The VGG weights are frozen buffers: they are not trained and not saved with
    the generator.
    """

    def __init__(self, path: Path | None = None) -> None:
        super().__init__()
        arrays = load_vgg16_conv1_1(path)
        self.register_buffer("weight", torch.from_numpy(arrays["weight"]), persistent=False)
        self.register_buffer("bias", torch.from_numpy(arrays["bias"]), persistent=False)
        mean = torch.from_numpy(arrays["mean_rgb_0_255"]).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, H, W) normalised slices -> (N, 64, H, W) conv1_1+ReLU activations."""
        if x.shape[1] != 1:
            raise ValueError(f"perceptual loss expects one channel, got {x.shape[1]}")
        rgb = (x.float() + 1.0) * 127.5 - self.mean  # [-1, 1] -> 0..255, grey in R=G=B
        return F.relu(F.conv2d(rgb, self.weight, self.bias, padding=1))

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.features(output) - self.features(target)).abs().mean() / FEATURE_SCALE
