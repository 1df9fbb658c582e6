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

SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


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


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean structural similarity over the masked voxels (Gaussian-window SSIM map)."""
    mask = _check(pred, target, mask)
    x = pred.astype(np.float64)
    y = target.astype(np.float64)
    peak = data_range(target, mask)
    c1, c2 = (SSIM_K1 * peak) ** 2, (SSIM_K2 * peak) ** 2

    def blur(a: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(a, SSIM_SIGMA, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map[mask].mean())


def volume_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR and SSIM of `pred` against `target` inside `mask`."""
    return {"mae": mae(pred, target, mask), "psnr": psnr(pred, target, mask),
            "ssim": ssim(pred, target, mask)}
