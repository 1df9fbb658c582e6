"""The level-free LUT (source over its 99th percentile, clipped, 128 bins, z-scored reference)
and the regions the zero-shot benchmark scores in."""

from __future__ import annotations

import numpy as np
import pytest

from mri2mri.benchmarks.generalisation import level_free
from mri2mri.benchmarks.generalisation.level_free import (
    BINS,
    CLIP,
    LevelFreeLUT,
    LUTStats,
    lut_bins,
    lut_input,
    regions,
)
from mri2mri.train.metrics import zscore


def test_the_definition_constants():
    assert (level_free.PERCENTILE, CLIP, BINS) == (99.0, 1.5, 128)


def test_input_is_the_source_over_its_99th_percentile_in_the_region_clipped():
    source = np.arange(1, 1001, dtype=np.float64)  # 1 .. 1000
    region = np.ones(source.shape, bool)
    anchor = np.percentile(source, 99.0)
    scaled = lut_input(source, region)
    assert scaled[:500] == pytest.approx(source[:500] / anchor)
    assert scaled.max() == pytest.approx(1000 / anchor) and scaled.max() < CLIP
    # Only the region sets the percentile; anything above 1.5 times it is clipped.
    region[500:] = False
    half = np.percentile(source[:500], 99.0)
    scaled = lut_input(source, region)
    assert scaled[:500] == pytest.approx(source[:500] / half)
    assert (scaled[source > 1.5 * half] == CLIP).all()
    below = np.concatenate([[-5.0], source])  # below 0 (never in a >0 region): clipped to 0
    assert lut_input(below, np.ones(below.shape, bool))[0] == 0
    with pytest.raises(ValueError, match="nothing to normalise by"):
        lut_input(-source, np.ones(source.shape, bool))
    with pytest.raises(ValueError, match="empty"):
        lut_input(source, np.zeros(source.shape, bool))


def test_bins_are_128_equal_steps_of_0_to_1_5_the_top_in_the_last():
    anchor_voxels = np.full(1000, 1.0)  # the 99th percentile of the region is 1
    values = np.array([0.0, 1.5 / 128 - 1e-9, 1.5 / 128, 0.75, 1.0, 1.5, 7.0])
    source = np.concatenate([anchor_voxels, values])
    bins = lut_bins(source, np.ones(source.shape, bool))[1000:]
    assert bins.tolist() == [0, 0, 1, 64, 85, 127, 127]


def test_each_bin_predicts_the_pooled_mean_z_scored_reference():
    """Two subjects, their voxels pooled (a bin's mean over every voxel in it); bins that
    no voxel fell into are interpolated between their neighbours, held at the ends."""
    rng = np.random.default_rng(0)
    stats, pooled_bins, pooled_z = [], [], []
    for size in (400, 900):
        source = rng.uniform(10, 100, size)
        reference = 3 * source + rng.normal(0, 5, size) + 50
        region = np.ones(size, bool)
        region[:20] = False  # outside the region: not counted
        stats.append(LUTStats.of(source, reference, region))
        pooled_bins.append(lut_bins(source, region)[region])
        pooled_z.append(zscore(reference, region)[region])
    lut = LevelFreeLUT.fit(stats)
    bins, z = np.concatenate(pooled_bins), np.concatenate(pooled_z)
    seen = np.unique(bins)
    for b in seen:
        assert lut.table[b] == pytest.approx(z[bins == b].mean())
    assert lut.empty == BINS - len(seen) > 0
    gaps = [b for b in range(seen.min(), seen.max()) if b not in seen]
    for b in gaps:
        lo, hi = seen[seen < b].max(), seen[seen > b].min()
        assert lut.table[b] == pytest.approx(lut.table[lo] + (lut.table[hi] - lut.table[lo])
                                             * (b - lo) / (hi - lo))
    assert (lut.table[: seen.min()] == lut.table[seen.min()]).all()
    assert (lut.table[seen.max():] == lut.table[seen.max()]).all()
    with pytest.raises(ValueError, match="no voxels"):
        LevelFreeLUT.fit([])


def test_predict_looks_up_each_voxel_and_is_0_outside_the_region():
    lut = LevelFreeLUT(np.linspace(-2, 2, BINS))
    source = np.array([0.0, 50.0, 99.0, 99.0, 200.0, 500.0])
    region = np.array([False, True, True, True, True, True])
    expected = lut.table[lut_bins(source, region)]
    predicted = lut.predict(source, region)
    assert predicted.dtype == np.float32 and predicted[0] == 0
    assert predicted[1:] == pytest.approx(expected[1:])


def _head(shape=(64, 64, 64)):
    """A 1 mm brain ball with a T2w-bright, T1w-grey blob of radius 10 inside it."""
    rng = np.random.default_rng(0)
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    brain = np.linalg.norm(grid - 32, axis=-1) <= 28
    blob = np.linalg.norm(grid - 32, axis=-1) <= 10
    t1 = np.where(brain, 100.0 + rng.normal(0, 3, shape), 0.0)
    t2 = np.where(brain, 100.0 + rng.normal(0, 3, shape), 0.0)
    t1[blob], t2[blob] = 95.0, 250.0
    return t1, t2, brain, blob


def test_regions_are_where_both_are_positive_less_the_t2w_bright_lesion_either_way():
    t1, t2, brain, blob = _head()
    t1[30, 30, 2] = 0.0  # a hole in one image: not in the region
    forward, lesion_ml = regions(t1, t2, source_contrast="T1w", target_contrast="T2w",
                                 voxel_mm=(1.0, 1.0, 1.0))
    backward, reverse_ml = regions(t2, t1, source_contrast="T2w", target_contrast="T1w",
                                  voxel_mm=(1.0, 1.0, 1.0))
    assert lesion_ml == reverse_ml > 4.0
    for name in forward:
        assert (forward[name] == backward[name]).all()
    assert (forward["brain"] == (brain & (t1 > 0))).all()
    without = forward["brain_without_lesion"]
    assert not (without & blob).any() and without.sum() < forward["brain"].sum()
    # A pair without a T2w: no lesion is looked for.
    found, none = regions(t1, t2, source_contrast="T1w", target_contrast="PDw",
                          voxel_mm=(1.0, 1.0, 1.0))
    assert list(found) == ["brain"] and none is None
