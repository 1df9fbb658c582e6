"""Validation metrics: known values, mask handling, and no torch import."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from mri2mri.train.metrics import level_free, mae, psnr, ssim, volume_metrics


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


def test_level_free_undoes_a_wrong_level_and_nothing_else(volume):
    data, mask = volume
    noise = np.random.default_rng(2).normal(0, 5, data.shape)
    darker = 0.5 * (data + noise)  # the contrast right up to noise, the level half
    found = level_free(darker, data, mask)
    assert found["level_gain"] == pytest.approx(2.0, rel=0.01)
    assert found["psnr_level_free"] == pytest.approx(psnr(data + noise, data, mask), abs=0.05)
    assert found["psnr_level_free"] > psnr(darker, data, mask) + 5
    # A prediction whose level is right already keeps gain ~1 and its PSNR; the gain
    # never makes a prediction worse (1 is among the gains it chooses from).
    same = level_free(data + noise, data, mask)
    assert same["level_gain"] == pytest.approx(1.0, abs=0.01)
    assert same["psnr_level_free"] >= psnr(data + noise, data, mask)
    assert level_free(np.where(mask, 0.0, 7.0), data, mask)["level_gain"] == 1.0


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
