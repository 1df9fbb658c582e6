"""The median intensity anchor: the same tissue at the same value whatever is brightest."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from mri2mri.runtime.imaging.normalize import MEDIAN_MULTIPLE, foreground_mask, intensity_scale
from mri2mri.runtime.imaging.preprocess import prepare_sources
from mri2mri.runtime.imaging.slicing import SliceGeometry
from mri2mri.runtime.metadata import ModelMetadata, Normalisation


def _head(lesion: bool, seed: int = 0) -> np.ndarray:
    """A 'T2w' ball: tissue at 100 (+-5 noise), CSF at 300 in the middle, and optionally a
    bright lesion at 600 (1.5 % of the brain)."""
    rng = np.random.default_rng(seed)
    grid = np.indices((48, 48, 48)).astype(float) - 23.5
    radius = np.sqrt((grid ** 2).sum(0))
    data = np.where(radius < 20, 100.0, 0.0) + rng.normal(0, 5, radius.shape) * (radius < 20)
    data[radius < 6] = 300.0
    if lesion:
        data[(np.abs(grid[0] - 12) < 4) & (np.abs(grid[1]) < 4) & (np.abs(grid[2]) < 4)] = 600
    return np.clip(data, 0, None).astype(np.float32)


def _tissue_value(data: np.ndarray, norm: Normalisation) -> float:
    """Median normalised value of the tissue (raw 80-120), as the runtime normalises it."""
    prepared = prepare_sources([nib.Nifti1Image(data, np.eye(4))], SliceGeometry(16), norm,
                               names=["T2w"])
    tissue = (data > 80) & (data < 120)
    return float(np.median(data[tissue] * (2.0 / prepared.scales[0]) - 1.0))


def test_the_median_anchor_keeps_tissue_where_a_bright_lesion_moves_the_percentile():
    plain, lesioned = _head(lesion=False), _head(lesion=True)
    median, percentile = Normalisation.median_anchored(), Normalisation()
    moved_median = abs(_tissue_value(plain, median) - _tissue_value(lesioned, median))
    moved_percentile = abs(_tissue_value(plain, percentile) - _tissue_value(lesioned, percentile))
    assert moved_percentile > 0.2  # 99.5th percentile: CSF, then the lesion
    assert moved_median < 0.01
    # the median tissue lands at 2 / MEDIAN_MULTIPLE - 1
    assert _tissue_value(plain, median) == pytest.approx(2 / MEDIAN_MULTIPLE - 1, abs=0.02)


def test_intensity_scale_is_the_multiple_of_the_percentile():
    data = _head(lesion=True)
    mask = foreground_mask(data)
    assert intensity_scale(data, mask, 50, 4.5) == pytest.approx(
        4.5 * np.percentile(data[mask], 50))
    assert intensity_scale(data, mask) == pytest.approx(np.percentile(data[mask], 99.5))


def test_normalisation_names_and_checks():
    assert Normalisation.named("percentile") == Normalisation()
    median = Normalisation.named("median")
    assert (median.method, median.percentile, median.multiple) == \
        ("foreground-median", 50.0, MEDIAN_MULTIPLE)
    with pytest.raises(ValueError, match="median or percentile"):
        Normalisation.named("zscore")
    with pytest.raises(ValueError, match="unknown normalisation method"):
        Normalisation(method="zscore")
    with pytest.raises(ValueError, match="percentile 50"):
        Normalisation(method="foreground-median", percentile=99.5)
    with pytest.raises(ValueError, match="multiple"):
        Normalisation(multiple=0)


def test_metadata_written_before_the_median_anchor_reads_as_the_percentile():
    data = json.loads(ModelMetadata(sources=["T1w"], target="T2w",
                                    normalisation=Normalisation.median_anchored()).to_json())
    assert ModelMetadata.from_json(json.dumps(data)).normalisation == \
        Normalisation.median_anchored()
    old = dict(data, normalisation={"method": "foreground-percentile", "percentile": 99.5,
                                    "mask_fraction": 0.1, "target_scale": 700.0})
    norm = ModelMetadata.from_json(json.dumps(old)).normalisation
    assert (norm.method, norm.percentile, norm.multiple) == ("foreground-percentile", 99.5, 1.0)
    bad = dict(data, normalisation={**data["normalisation"], "method": "zscore"})
    with pytest.raises(ValueError, match="zscore"):
        ModelMetadata.from_json(json.dumps(bad))


def test_the_training_option_and_old_runs_resuming_as_they_ran():
    pytest.importorskip("torch")
    from mri2mri.train.cli_train import _train_config
    from mri2mri.train.config import TrainConfig, stored_value

    assert TrainConfig(data="d", sources=["T1w"], target="T2w", out="o").normalisation == \
        "percentile"
    with pytest.raises(ValueError, match="median or percentile"):
        TrainConfig(data="d", sources=["T1w"], target="T2w", out="o", normalisation="zscore")
    # a run saved before the simulated prior existed ran without it (default now 6), and
    # before the normalisation option with the percentile
    old = {"epochs": 2}
    assert stored_value(old, "simulated_subjects") == 0
    assert stored_value(old, "normalisation") == "percentile"
    resumed = _train_config(old, {"normalisation": None, "simulated_subjects": None},
                            data="d", sources=["T1w"], target="T2w", out="o")
    assert (resumed.normalisation, resumed.simulated_subjects) == ("percentile", 0)
    fresh = _train_config({}, {"normalisation": None, "simulated_subjects": None},
                          data="d", sources=["T1w"], target="T2w", out="o")
    assert (fresh.normalisation, fresh.simulated_subjects) == ("percentile", 6)
    median = _train_config({"epochs": 2, "normalisation": "median"},
                           {"normalisation": None}, data="d", sources=["T1w"], target="T2w",
                           out="o")
    assert median.normalisation == "median"
