"""Image-quality metrics on whole volumes inside a mask (numpy/scipy/scikit-image, no torch).

Used for validation during training, by the demo report and by the benchmarks,
so it must stay importable without torch. Two families:

- **scale-restored** (`mae`, `psnr`, `ssim`, `volume_metrics`, and `gain_matched`):
  values in the target image's own intensity scale; PSNR and SSIM use the target's
  intensity range inside the mask as the data range. SSIM follows Wang et al. (2004)
  with a 3D Gaussian window (sigma 1.5 voxels, K1=0.01, K2=0.03), averaged over the
  masked voxels. They judge a prediction's overall intensity level too.
- **level-free** (`level_free_region`, `zscore`, `level_free_psnr`, `level_free_ssim`,
  `level_free_mae`, `level_free_scores`): prediction and reference each z-scored over the
  region first, so an image right up to a gain and an offset scores perfectly. An MRI's
  absolute intensity is arbitrary (a scanner's units), so cross-scanner results are
  judged with these.
"""

from __future__ import annotations

import numpy as np

#: The keys of `gain_matched`'s result (the scale-restored score with the best global gain).
GAIN_MATCHED = ("psnr_gain_matched", "level_gain")
#: The keys of `level_free_scores`' result (the z-scored, level-free definition).
LEVEL_FREE = ("level_free_psnr", "level_free_ssim", "level_free_mae")
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
#: scikit-image's Gaussian window reaches 3.5 sigma (fixed there; named here for the radius).
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


def _ssim_map(x: np.ndarray, y: np.ndarray, peak: float) -> np.ndarray:
    """scikit-image's SSIM map (Gaussian window, population covariance: Wang et al.'s
    settings) of two blocks; an axis shorter than the window is first padded by
    mirroring it (numpy's "symmetric", the same values as the filter's own "reflect"
    border, so the map on the block's voxels is unchanged) because scikit-image refuses
    images smaller than its window."""
    from skimage.metrics import structural_similarity

    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # scikit-image's (and scipy's) window
    pads = [radius if n < 2 * radius + 1 else 0 for n in x.shape]
    block = tuple(slice(pad, pad + n) for pad, n in zip(pads, x.shape, strict=True))
    x = np.pad(x.astype(np.float64), [(pad, pad) for pad in pads], mode="symmetric")
    y = np.pad(y.astype(np.float64), [(pad, pad) for pad in pads], mode="symmetric")
    _, ssim_map = structural_similarity(x, y, data_range=peak, gaussian_weights=True,
                                        sigma=SSIM_SIGMA, use_sample_covariance=False,
                                        K1=SSIM_K1, K2=SSIM_K2, full=True)
    return ssim_map[block]


def ssim(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """Mean structural similarity over the masked voxels (Gaussian-window SSIM map).

    The map is scikit-image's (`structural_similarity(..., full=True)` with a Gaussian
    window of sigma 1.5, population covariance, K1 0.01, K2 0.03 and the target's range
    inside the mask as data range), averaged over the mask. It replaced a hand-written
    map of the same formula (issue 33): the two agree to 1e-12 on the test volumes, so
    every SSIM reported before stays comparable, and the formula is now the reference
    implementation's rather than ours. Inputs are cast to float64 first (scikit-image
    would compute float32 inputs in float32).

    The map is computed in slabs of `SSIM_CHUNK` planes along the first axis, each
    with the filter's radius of neighbours on both sides, so memory stays a few
    slabs (not a dozen float64 copies of the volume) and the result is the whole
    volume's: every voxel sees exactly the neighbours it would in one piece.
    """
    mask = _check(pred, target, mask)
    peak = data_range(target, mask)
    radius = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # scipy's own rounding of the window
    n = pred.shape[0]
    total = 0.0
    for start in range(0, n, SSIM_CHUNK):
        stop = min(n, start + SSIM_CHUNK)
        lo, hi = max(0, start - radius), min(n, stop + radius)
        ssim_map = _ssim_map(pred[lo:hi], target[lo:hi], peak)[start - lo: stop - lo]
        total += float(ssim_map[mask[start:stop]].sum())
    return total / int(mask.sum())


def gain_matched(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The scale-restored PSNR after the least-squares global gain inside the mask, and
    that gain (keys `GAIN_MATCHED`).

    A synthesized image can be wrong in its contrast or only in its overall level; on a
    scan from an unseen scanner the level (where the normalisation's anchor puts the
    tissue) is a guess. Scored with the best gain, only contrast and structure count;
    the gain itself is the level's error (1: right, below 1: too bright). Unlike the
    level-free scores (`level_free_scores`) it keeps the target's own scale and offset:
    a gain, no offset, is fitted. Called ``level_free`` (``psnr_level_free``) before the
    z-scored definition took that name.
    """
    mask = _check(pred, target, mask)
    values = pred[mask].astype(np.float64)
    energy = float(values @ values)
    gain = float(values @ target[mask].astype(np.float64)) / energy if energy > 0 else 1.0
    return dict(zip(GAIN_MATCHED, (psnr(pred * np.float32(gain), target, mask), gain),
                    strict=True))


# ---- level-free (z-scored) scores ----------------------------------------------------------

def level_free_region(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Where a level-free score looks: the voxels where both the source and the reference
    are above 0 (skull-stripped scans: the brain both images hold)."""
    if source.shape != reference.shape:
        raise ValueError(f"shapes differ: source {source.shape}, reference {reference.shape}")
    return (np.asarray(source) > 0) & (np.asarray(reference) > 0)


def zscore(volume: np.ndarray, region: np.ndarray) -> np.ndarray:
    """`volume` minus its mean over `region`, divided by its standard deviation there
    (float64; 0 outside the region). A volume constant over the region (standard
    deviation 0) becomes 0 there: it carries no contrast to score."""
    region = np.asarray(region, dtype=bool)
    if volume.shape != region.shape:
        raise ValueError(f"shapes differ: volume {volume.shape}, region {region.shape}")
    if not region.any():
        raise ValueError("the region is empty")
    values = volume[region].astype(np.float64)
    sd = float(values.std())
    out = np.zeros(volume.shape, dtype=np.float64)
    out[region] = (values - values.mean()) / sd if sd > 0 else 0.0
    return out


def _zscored(pred: np.ndarray, reference: np.ndarray, region: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Both volumes z-scored over the region, the region, and the z-scored reference's
    range there (max - min: the peak of PSNR and the data range of SSIM)."""
    region = _check(pred, reference, region)
    zr = zscore(reference, region)
    zp = zscore(pred, region)
    values = zr[region]
    return zp, zr, region, float(values.max() - values.min()) or 1.0


def _psnr_z(zp: np.ndarray, zr: np.ndarray, region: np.ndarray, peak: float) -> float:
    rmse = float(np.sqrt(np.mean((zp[region] - zr[region]) ** 2)))
    return float("inf") if rmse == 0 else float(20 * np.log10(peak / rmse))


def _ssim_z(zp: np.ndarray, zr: np.ndarray, peak: float) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(zp, zr, data_range=peak))


def _mae_z(zp: np.ndarray, zr: np.ndarray, region: np.ndarray) -> float:
    return float(np.mean(np.abs(zp[region] - zr[region])))


def level_free_psnr(pred: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB) of the z-scored images (`zscore`) over the region: 20 log10((max - min
    of the z-scored reference) / RMSE of the z-scored prediction against it); infinite
    when the prediction equals the reference up to a gain (> 0) and an offset (or some
    300 dB, float rounding). Both z-scored (population SD), the mean squared difference
    is 2 (1 - r), r their Pearson correlation over the region: the PSNR is a function of
    r and of the reference's range alone."""
    zp, zr, region, peak = _zscored(pred, reference, region)
    return _psnr_z(zp, zr, region, peak)


def level_free_ssim(pred: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """scikit-image's `structural_similarity` of the z-scored volumes (`zscore`: everything
    outside the region is 0), with data_range = max - min of the z-scored reference over
    the region and scikit-image's defaults otherwise (7-voxel uniform window, sample
    covariance, K1 0.01, K2 0.03; the mean of its map over the whole volume less a 3-voxel
    border).

    The background counts: where both volumes are 0 the map is 1, so this is higher than
    a mean over the region alone, and comparable only between images on the same grid
    with the same region (as the methods of one benchmark are)."""
    zp, zr, _, peak = _zscored(pred, reference, region)
    return _ssim_z(zp, zr, peak)


def level_free_mae(pred: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean absolute error of the z-scored images (`zscore`) over the region, in
    reference standard deviations."""
    zp, zr, region, _ = _zscored(pred, reference, region)
    return _mae_z(zp, zr, region)


def level_free_scores(pred: np.ndarray, reference: np.ndarray, region: np.ndarray
                      ) -> dict[str, float]:
    """`level_free_psnr`, `level_free_ssim` and `level_free_mae` (keys `LEVEL_FREE`),
    z-scoring each volume once."""
    zp, zr, region, peak = _zscored(pred, reference, region)
    return dict(zip(LEVEL_FREE, (_psnr_z(zp, zr, region, peak), _ssim_z(zp, zr, peak),
                                 _mae_z(zp, zr, region)), strict=True))


def volume_metrics(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """MAE, PSNR and SSIM of `pred` against `target` inside `mask`."""
    return {"mae": mae(pred, target, mask), "psnr": psnr(pred, target, mask),
            "ssim": ssim(pred, target, mask)}
