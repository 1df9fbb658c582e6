"""Axial slicing with centred padding to a network-friendly size, and exact un-padding."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Value used for padded pixels: the normalised background level (intensity 0 -> -1).
PAD_VALUE = -1.0


@dataclass(frozen=True)
class SliceGeometry:
    """Slices are padded to a multiple of `multiple` and at least `min_size` on each side."""

    multiple: int = 16
    min_size: int = 0

    def padded_size(self, n: int) -> int:
        size = -(-n // self.multiple) * self.multiple
        return max(size, self.min_size)


@dataclass(frozen=True)
class Padding:
    """Pixels added before/after along the two in-plane axes."""

    before: tuple[int, int]
    after: tuple[int, int]


def padding_for(shape: tuple[int, ...], geometry: SliceGeometry) -> Padding:
    """Centred padding that brings an (X, Y, ...) volume's slices to the geometry's size."""
    nx, ny = shape[0], shape[1]
    hx, hy = geometry.padded_size(nx), geometry.padded_size(ny)
    before = ((hx - nx) // 2, (hy - ny) // 2)
    return Padding(before, (hx - nx - before[0], hy - ny - before[1]))


def to_slices(volume: np.ndarray, padding: Padding, pad_value: float = PAD_VALUE) -> np.ndarray:
    """(C, X, Y, Z) channels-first (or (X, Y, Z)) volume -> (Z, C, H, W) padded axial slices."""
    if volume.ndim == 3:
        volume = volume[None]
    padded = np.pad(volume, ((0, 0), (padding.before[0], padding.after[0]),
                             (padding.before[1], padding.after[1]), (0, 0)),
                    constant_values=pad_value)
    return np.ascontiguousarray(np.moveaxis(padded, 3, 0), dtype=np.float32)


def from_slices(slices: np.ndarray, padding: Padding) -> np.ndarray:
    """(Z, H, W) or (Z, 1, H, W) slices -> (X, Y, Z) volume without the padding."""
    if slices.ndim == 4:
        if slices.shape[1] != 1:
            raise ValueError(f"expected one output channel, got {slices.shape[1]}")
        slices = slices[:, 0]
    _, h, w = slices.shape
    cropped = slices[:, padding.before[0]: h - padding.after[0],
                     padding.before[1]: w - padding.after[1]]
    return np.ascontiguousarray(np.moveaxis(cropped, 0, 2))


def context_indices(z: int, n_slices: int, context: int) -> np.ndarray:
    """Slice indices z-context .. z+context, clamped to the volume (edge slices repeat).

    Repeating the edge slice (rather than padding with background) keeps the
    first and last slices' stacks looking like anatomy, as they do in training.
    """
    if context < 0:
        raise ValueError(f"context must be >= 0 (got {context})")
    return np.clip(np.arange(z - context, z + context + 1), 0, n_slices - 1)


def stack_context(slices: np.ndarray, context: int) -> np.ndarray:
    """(Z, C, H, W) slices -> (Z, C * (2 * context + 1), H, W) 2.5D input stacks.

    Source-major channel order: channel ``c * (2 * context + 1) + j`` holds source
    ``c`` at slice ``z - context + j``. Training (`mri2mri.train`) and the runtime
    both build their stacks with `context_indices`, so they cannot disagree.
    """
    if context == 0:
        return slices
    z, c, h, w = slices.shape
    index = np.stack([context_indices(i, z, context) for i in range(z)])  # (Z, 2K+1)
    stacked = slices[index]  # (Z, 2K+1, C, H, W)
    return np.ascontiguousarray(stacked.transpose(0, 2, 1, 3, 4).reshape(z, -1, h, w))
