"""Validation metrics: known values, mask handling, and no torch import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mri2mri.train.metrics import (
    LEVEL_FREE,
    gain_matched,
    level_free_mae,
    level_free_psnr,
    level_free_region,
    level_free_scores,
    level_free_ssim,
    mae,
    psnr,
    ssim,
    volume_metrics,
    zscore,
)


@pytest.fixture
def volume():
    rng = np.random.default_rng(0)
    data = rng.uniform(100, 200, (12, 14, 10))
    mask = np.zeros(data.shape, bool)
    mask[2:10, 2:12, 2:8] = True
    return data, mask


def test_identical_volumes(volume):
    data, mask = volume
    assert volume_metrics(data, data, mask) == {"mae": 0.0, "psnr": float("inf"), "ssim": 1.0}


def test_known_offset(volume):
    data, mask = volume
    shifted = data + 5.0
    assert mae(shifted, data, mask) == pytest.approx(5.0)
    peak = data[mask].max() - data[mask].min()
    assert psnr(shifted, data, mask) == pytest.approx(10 * np.log10(peak ** 2 / 25.0))
    assert 0.9 < ssim(shifted, data, mask) < 1.0


def test_gain_matched_undoes_a_wrong_level_and_nothing_else(volume):
    data, mask = volume
    noise = np.random.default_rng(2).normal(0, 5, data.shape)
    darker = 0.5 * (data + noise)  # the contrast right up to noise, the level half
    found = gain_matched(darker, data, mask)
    assert found["level_gain"] == pytest.approx(2.0, rel=0.01)
    assert found["psnr_gain_matched"] == pytest.approx(psnr(data + noise, data, mask), abs=0.05)
    assert found["psnr_gain_matched"] > psnr(darker, data, mask) + 5
    # A prediction whose level is right already keeps gain ~1 and its PSNR; the gain
    # never makes a prediction worse (1 is among the gains it chooses from).
    same = gain_matched(data + noise, data, mask)
    assert same["level_gain"] == pytest.approx(1.0, abs=0.01)
    assert same["psnr_gain_matched"] >= psnr(data + noise, data, mask)
    assert gain_matched(np.where(mask, 0.0, 7.0), data, mask)["level_gain"] == 1.0


def test_only_the_mask_counts(volume):
    data, mask = volume
    wrong_outside = np.where(mask, data, 0.0)
    assert mae(wrong_outside, data, mask) == 0.0
    noisy = data + np.random.default_rng(1).normal(0, 30, data.shape)
    assert ssim(noisy, data, mask) < ssim(data + 1, data, mask)


def test_shape_and_empty_mask_errors(volume):
    data, mask = volume
    with pytest.raises(ValueError, match="shapes differ"):
        mae(data[:-1], data, mask)
    with pytest.raises(ValueError, match="empty"):
        psnr(data, data, np.zeros_like(mask))


def test_metrics_module_does_not_import_torch():
    code = "import sys, mri2mri.train.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ssim_in_slabs_equals_one_piece(monkeypatch):
    """Slab-wise SSIM (bounded memory) gives the whole volume's value, slab edges included."""
    import mri2mri.train.metrics as metrics

    rng = np.random.default_rng(1)
    target = rng.uniform(0, 100, (45, 16, 12))
    pred = target + rng.normal(0, 10, target.shape)
    mask = np.zeros(target.shape, bool)
    mask[1:44, 3:14, 2:11] = True
    slabs = ssim(pred, target, mask)
    monkeypatch.setattr(metrics, "SSIM_CHUNK", 1000)  # one piece
    whole = ssim(pred, target, mask)
    assert metrics.SSIM_CHUNK > len(target) > 2 * 16
    assert slabs == pytest.approx(whole, rel=1e-12, abs=0)
    assert 0.2 < whole < 0.99


def _wang_ssim(pred, target, mask):
    """The hand-written masked SSIM that `ssim` replaced (issue 33): Wang et al.'s formula
    with scipy's Gaussian filter, kept here as the reference it must agree with."""
    from scipy import ndimage

    x, y = pred.astype(np.float64), target.astype(np.float64)
    peak = float(target[mask].max() - target[mask].min())
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2

    def blur(a):
        return ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="reflect")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(ssim_map[mask].mean())


@pytest.mark.parametrize("shape", [(45, 16, 12), (12, 14, 10), (20, 23, 9), (4, 5, 3)])
def test_ssim_is_scikit_image_and_agrees_with_the_hand_written_one(shape):
    """scikit-image's map averaged over the mask gives the former hand-written SSIM, also
    on volumes thinner than its window (padded by mirroring) and on float32 predictions."""
    rng = np.random.default_rng(1)
    target = rng.uniform(0, 100, shape)
    pred = (target + rng.normal(0, 10, shape)).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[1:-1, 1:-1, 1:-1] = True
    assert ssim(pred, target, mask) == pytest.approx(_wang_ssim(pred, target, mask),
                                                     abs=1e-9)


# ---- level-free (z-scored) scores ------------------------------------------------------------

@pytest.fixture
def brain():
    """A skull-stripped-like volume: positive inside an ellipsoid, 0 outside."""
    rng = np.random.default_rng(3)
    shape = (24, 26, 22)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum(g ** 2 for g in grid) < 0.8
    data = np.where(inside, 100 + 40 * grid[0] + rng.uniform(0, 30, shape), 0.0)
    return data, inside


def test_level_free_region_is_where_both_are_positive():
    source = np.array([[0.0, 1.0, 2.0, -1.0]])
    reference = np.array([[5.0, 0.0, 3.0, 4.0]])
    assert level_free_region(source, reference).tolist() == [[False, False, True, False]]
    with pytest.raises(ValueError, match="shapes differ"):
        level_free_region(source, reference[:, :2])


def test_zscore_has_mean_0_and_sd_1_in_the_region_and_0_outside(brain):
    data, region = brain
    z = zscore(data, region)
    assert z[region].mean() == pytest.approx(0, abs=1e-12)
    assert z[region].std() == pytest.approx(1, abs=1e-12)
    assert not z[~region].any()
    assert not zscore(np.where(region, 7.0, 0.0), region).any()  # constant: no contrast


def test_level_free_scores_ignore_gain_and_offset(brain):
    """A prediction equal to the reference up to a gain and an offset scores perfectly."""
    data, region = brain
    other_scanner = np.where(region, 3.7 * data - 250.0, 12.0)  # background is not scored
    found = level_free_scores(other_scanner, data, region)
    assert set(found) == set(LEVEL_FREE)
    assert found["level_free_psnr"] > 250  # infinite but for float rounding
    assert found["level_free_mae"] == pytest.approx(0, abs=1e-12)
    assert found["level_free_ssim"] == pytest.approx(1, abs=1e-12)
    assert level_free_psnr(data, data, region) == float("inf")
    darker = level_free_scores(0.01 * data, data, region)
    assert darker["level_free_psnr"] > 250 and darker["level_free_ssim"] == pytest.approx(1)
    # An inverted contrast is as wrong as it gets, whatever the level.
    assert level_free_psnr(-data, data, region) < level_free_psnr(np.sqrt(data), data, region)


def test_level_free_psnr_and_mae_of_a_known_noise_level(brain):
    """Noise of sd s on a z-scored reference: RMSE s (in z units, after the prediction's own
    z-scoring, nearly), so PSNR = 20 log10(range / s), MAE = s sqrt(2 / pi)."""
    data, region = brain
    zr = zscore(data, region)
    s = 0.1
    noise = np.random.default_rng(4).normal(0, s, data.shape)
    pred = 50 + 9 * (zr + noise)  # any level: only the z-scores count
    peak = zr[region].max() - zr[region].min()
    # The prediction's own z-scoring divides by sqrt(1 + s^2) and shifts by the noise's mean.
    assert level_free_psnr(pred, data, region) == pytest.approx(20 * np.log10(peak / s),
                                                                abs=0.1)
    assert level_free_mae(pred, data, region) == pytest.approx(s * np.sqrt(2 / np.pi),
                                                               rel=0.05)
    # Exactly: the definition, step by step.
    zp = zscore(pred, region)
    rmse = np.sqrt(np.mean((zp[region] - zr[region]) ** 2))
    assert level_free_psnr(pred, data, region) == pytest.approx(20 * np.log10(peak / rmse),
                                                                rel=1e-12)


def test_level_free_psnr_depends_on_the_correlation_alone(brain):
    """Mean squared difference of two z-scored images = 2 (1 - r): PSNR = 20 log10(range) -
    10 log10(2 (1 - r)), r the Pearson correlation over the region."""
    data, region = brain
    pred = np.sqrt(data) + np.random.default_rng(6).normal(0, 1, data.shape)
    r = np.corrcoef(pred[region], data[region])[0, 1]
    zr = zscore(data, region)
    peak = zr[region].max() - zr[region].min()
    assert level_free_psnr(pred, data, region) == pytest.approx(
        20 * np.log10(peak) - 10 * np.log10(2 * (1 - r)), rel=1e-9)


def test_level_free_ssim_is_scikit_image_on_the_masked_z_scored_volumes(brain):
    from skimage.metrics import structural_similarity

    data, region = brain
    pred = np.sqrt(data) + np.random.default_rng(5).normal(0, 1, data.shape) + 80.0
    zp, zr = zscore(pred, region), zscore(data, region)
    expected = structural_similarity(np.where(region, zp, 0), np.where(region, zr, 0),
                                     data_range=zr[region].max() - zr[region].min())
    assert level_free_ssim(pred, data, region) == pytest.approx(expected, rel=1e-12)
    assert 0 < expected < 0.99
    assert level_free_scores(pred, data, region)["level_free_ssim"] == level_free_ssim(
        pred, data, region)


def test_level_free_scores_check_shapes_and_an_empty_region(brain):
    data, region = brain
    with pytest.raises(ValueError, match="shapes differ"):
        level_free_scores(data[:-1], data, region)
    with pytest.raises(ValueError, match="empty"):
        level_free_scores(data, data, np.zeros_like(region))
