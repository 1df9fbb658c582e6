"""Image-quality metrics on whole volumes inside a mask (numpy/scipy only, no torch).

Used for validation during training, by the demo report and by the benchmarks,
so it must stay importable without torch. Values are in the target image's own
intensity scale; PSNR and SSIM use the target's intensity range inside the mask
as the data range. SSIM follows Wang et al. (2004) with a 3D Gaussian window
(sigma 1.5 voxels, K1=0.01, K2=0.03), averaged over the masked voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: The keys of `level_free`'s result.
LEVEL_FREE = ("psnr_level_free", "level_gain")
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_TRUNCATE = 3.5
#: Planes per slab of the SSIM map (memory: a few slabs, whatever the volume's size).
SSIM_CHUNK = 16


def _check(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    if pred.shape != target.shape or mask.shape != target.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, target {target.shape}, "
                         f"mask {mask.shape}")
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("the mask is empty")
    return mask


def data_range(target: np.ndarray, mask: np.ndarray) -> float:
    """Intensity range of the target inside the mask (the PSNR/SSIM peak)."""
    values = target[mask]
    return float(values.max() - values.min()) or 1.0


def mae(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error inside the mask."""
    mask = _check(pred, target, mask)
    return float(np.mean(np.abs(pred[mask].astype(np.float64) - target[mask])))


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) inside the mask."""
    mask = _check(pred, target, mask)
    mse = float(np.mean((pred[mask].astype(np.float64) - target[mask]) ** 2))
    if mse == 0:
        return float("inf")
    return float(10 * np.log10(data_range(target, mask) ** 2 / mse))


def _ssim_map(x: np.ndarray, y: np.ndarray, c1: float, c2: float) -> np.ndarray:
    x = x.astype(np.float64)
    y = y.astype(np.float64)

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean structural similarity over the masked voxels (Gaussian-window SSIM map).

    The map is computed in slabs of `SSIM_CHUNK` planes along the first axis, each
    with the filter's radius of neighbours on both sides, so memory stays a few
    slabs (not a dozen float64 copies of the volume) and the result is the whole
    volume's: every voxel sees exactly the neighbours it would in one piece.
    """
    mask = _check(pred, target, mask)
    peak = data_range(target, mask)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # scipy's own rounding of the window
    n = pred.shape[0]
    total = 0.0
    for start in range(0, n, SSIM_CHUNK):
        stop = min(n, start + SSIM_CHUNK)
        lo, hi = max(0, start - radius), min(n, stop + radius)
        ssim_map = _ssim_map(pred[lo:hi], target[lo:hi], c1, c2)[start - lo: stop - lo]
        total += float(ssim_map[mask[start:stop]].sum())
    return total / int(mask.sum())


def level_free(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR after the least-squares global gain inside the mask, and that gain.

    A synthesized image can be wrong in its contrast or only in its overall level; on a
    scan from an unseen scanner the level (where the normalisation's anchor puts the
    tissue) is a guess. Scored with the best gain, only contrast and structure count;
    the gain itself is the level's error (1: right, below 1: too bright).
    """
    mask = _check(pred, target, mask)
    values = pred[mask].astype(np.float64)
    energy = float(values @ values)
    gain = float(values @ target[mask].astype(np.float64)) / energy if energy > 0 else 1.0
    return dict(zip(LEVEL_FREE, (psnr(pred * np.float32(gain), target, mask), gain), strict=True))


def volume_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR and SSIM of `pred` against `target` inside `mask`."""
    return {"mae": mae(pred, target, mask), "psnr": psnr(pred, target, mask),
            "ssim": ssim(pred, target, mask)}
