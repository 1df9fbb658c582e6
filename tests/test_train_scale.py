"""Training at dataset scale: the slice cache, the cached dataset and its hooks, the sampler,
the streamed baseline, mixed-precision state across devices, 2.5D context."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from test_train_cohort import TINY, tiny_cohort_dir

from mri2mri.data.cohort import Cohort
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.slicing import SliceGeometry, stack_context
from mri2mri.runtime.metadata import Normalisation
from mri2mri.train.baseline import IntensityLUT, LUTStats
from mri2mri.train.cache import CacheSpec, NotCached, SliceCache
from mri2mri.train.checkpoint import checkpoint_metadata, load_checkpoint
from mri2mri.train.config import TrainConfig
from mri2mri.train.dataset import CachedSlices, EpochSampler, epoch_order
from mri2mri.train.inference import synthesize_with_checkpoint
from mri2mri.train.prepare import MIN_FOREGROUND, load_subject
from mri2mri.train.trainer import train
from mri2mri.train.updates import load_scaler_state

GEOMETRY = SliceGeometry(16)


def _subjects(tmp_path_factory, n=3):
    return Cohort.discover(tiny_cohort_dir(tmp_path_factory)).subjects[:n]


def _cache(root, sources=("T1w",), target="T2w"):
    return SliceCache(root, CacheSpec.of(sources, target, GEOMETRY, Normalisation()))


def test_cache_matches_preparation_and_is_reused(tmp_path_factory, tmp_path):
    subjects = _subjects(tmp_path_factory)
    cache = _cache(tmp_path)
    entries = cache.ensure(subjects, jobs=2)
    assert cache.built == 3
    for subject, entry in zip(subjects, entries, strict=True):
        data = load_subject(subject, ["T1w"], "T2w", geometry=GEOMETRY,
                            norm=Normalisation())
        np.testing.assert_array_equal(entry.array("sources"), data.prepared.slices)
        np.testing.assert_array_equal(entry.array("target"), data.target_slices)
        np.testing.assert_array_equal(entry.array("mask"), data.mask_slices)
        assert entry.target_scale == data.target_scale
        np.testing.assert_array_equal(entry.keep,
                                      np.flatnonzero(data.foreground_fraction >= MIN_FOREGROUND))
        assert isinstance(entry.array("sources"), np.memmap)
    again = _cache(tmp_path)
    again.ensure(subjects)
    assert again.built == 0
    # Another configuration (other target) lives beside it, under its own key.
    other = _cache(tmp_path, target="PDw")
    assert other.root != cache.root
    # The streamed look-up table equals the fit on all slices at once.
    prepared = [load_subject(s, ["T1w"], "T2w", geometry=GEOMETRY, norm=Normalisation())
                for s in subjects]
    direct = IntensityLUT.fit([p.prepared.slices for p in prepared],
                              [p.target_slices for p in prepared])
    streamed = IntensityLUT.from_stats(LUTStats.total(e.lut_stats() for e in entries))
    np.testing.assert_allclose(streamed.table, direct.table, rtol=1e-6)


def test_cache_built_over_several_pools_counts_every_subject(tmp_path_factory, tmp_path,
                                                             monkeypatch):
    import mri2mri.train.cache as cache_module

    monkeypatch.setattr(cache_module, "BUILDS_PER_WORKER", 1)  # 2 pools for 3 subjects
    subjects = _subjects(tmp_path_factory)
    counts: list[tuple[int, int]] = []
    entries = _cache(tmp_path).ensure(subjects, jobs=2,
                                      progress=lambda done, total: counts.append((done, total)))
    assert counts == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [e.id for e in entries] == [s.id for s in subjects]


def test_stale_and_truncated_entries_are_rebuilt(tmp_path_factory, tmp_path):
    subjects = _subjects(tmp_path_factory)
    cache = _cache(tmp_path)
    with pytest.raises(NotCached):
        cache.check(subjects[0])
    notes: list[str] = []
    entries = cache.ensure(subjects, note=notes.append)
    assert cache.built == 3 and notes == []  # built the first time: nothing to report
    good = np.array(entries[1].array("sources"))
    # Truncated array: detected from its recorded size, rebuilt, same data again.
    path = entries[1].path / "sources.npy"
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 100)
    rebuilt = cache.ensure(subjects, note=notes.append)
    assert cache.built == 4 and len(notes) == 1 and "truncated" in notes[0]
    np.testing.assert_array_equal(rebuilt[1].array("sources"), good)
    # Stale: an input file changed (its mtime) -> rebuilt.
    t1 = subjects[0].path("T1w")
    stat = t1.stat()
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    notes.clear()
    cache.ensure(subjects, note=notes.append)
    assert cache.built == 5 and "stale" in notes[0] and subjects[0].id in notes[0]
    # Damaged record: rebuilt too, never read.
    (entries[2].path / "entry.json").write_text("{not json")
    notes.clear()
    cache.ensure(subjects, note=notes.append)
    assert cache.built == 6 and "entry.json" in notes[0]


def test_a_bad_input_file_while_building_is_a_clear_error(tmp_path_factory, tmp_path):
    """Built in worker processes: the error names the file; finished entries are kept."""
    import shutil

    source = tiny_cohort_dir(tmp_path_factory)
    cohort_dir = tmp_path / "cohort"
    shutil.copytree(source, cohort_dir)
    subjects = Cohort.discover(cohort_dir).subjects[:3]
    bad = subjects[2].path("T2w")
    bad.write_bytes(bad.read_bytes()[:300])  # truncated gzip
    cache = _cache(tmp_path / "cache")
    with pytest.raises(InputError) as caught:
        cache.ensure(subjects, jobs=1)
    assert str(bad) in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
    assert cache.check(subjects[0]).id == subjects[0].id  # built before the bad one


def test_truncation_during_a_run_is_a_clear_error(tmp_path_factory, tmp_path):
    entries = _cache(tmp_path).ensure(_subjects(tmp_path_factory, 1))
    dataset = CachedSlices(entries)
    path = entries[0].path / "target.npy"
    with path.open("r+b") as f:
        f.truncate(200)
    with pytest.raises(InputError, match="unreadable during the run"):
        dataset[(0, 0, len(dataset) - 1)]


def test_items_stack_context_and_call_the_transform(tmp_path_factory, tmp_path):
    subjects = _subjects(tmp_path_factory, 2)
    entries = _cache(tmp_path, sources=("T1w", "PDw")).ensure(subjects)
    plain = CachedSlices(entries, context=1)
    data = load_subject(subjects[1], ["T1w", "PDw"], "T2w", geometry=GEOMETRY,
                        norm=Normalisation())
    keep = entries[1].keep
    index = len(entries[0].keep)  # the second subject's first kept slice
    source, target = plain[(0, 0, index)]
    expected = stack_context(data.prepared.slices, 1)[keep[0]]
    assert source.shape == (6, *expected.shape[1:])  # 2 sources x (2 * 1 + 1)
    np.testing.assert_array_equal(source.numpy(), expected)
    np.testing.assert_array_equal(target.numpy(), data.target_slices[keep[0]])

    seen = []

    def identity(src, tgt, rng):
        seen.append((src.shape, tgt.shape, src.dtype, rng.integers(1 << 30)))
        return src, tgt

    hooked = CachedSlices(entries, context=1, transform=identity, seed=5)
    a = hooked[(3, 7, index)]
    assert seen[0][:3] == ((2, 3, *expected.shape[1:]), (1, *expected.shape[1:]), np.float32)
    assert all(torch.equal(x, y) for x, y in zip(a, (source, target), strict=True))
    hooked[(3, 7, index)]
    hooked[(4, 7, index)]
    assert seen[1][3] == seen[0][3] != seen[2][3]  # rng = f(seed, epoch, position)
    assert seen[0][3] == np.random.default_rng([5, 3, 7]).integers(1 << 30)


def test_sampler_shards_each_global_batch():
    one = EpochSampler(50, 24, seed=1, batch_size=8)
    ranks = [EpochSampler(50, 24, seed=1, batch_size=8, rank=r, world=2) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(3)
    keys = list(one)
    assert [k[2] for k in keys] == epoch_order(50, 24, 1, 3) and {k[0] for k in keys} == {3}
    parts = [list(s) for s in ranks]
    assert all(len(p) == 12 for p in parts) and ranks[0].per_rank_batch == 4
    for step in range(3):  # each global step = rank 0's 4 items then rank 1's 4 items
        assert parts[0][4 * step: 4 * step + 4] + parts[1][4 * step: 4 * step + 4] == \
            keys[8 * step: 8 * step + 8]
    # the incomplete global batch is dropped
    assert len(EpochSampler(50, 20, seed=1, batch_size=8, rank=0, world=2)) == 8
    with pytest.raises(ValueError, match="multiple"):
        EpochSampler(50, 20, seed=1, batch_size=7, rank=0, world=2)


@pytest.mark.parametrize("saved_enabled", [True, False])
def test_scaler_state_resumes_across_devices(saved_enabled):
    saved = torch.amp.GradScaler("cpu", enabled=saved_enabled, init_scale=1024.0)
    state = saved.state_dict()
    assert bool(state) == saved_enabled
    for enabled in (True, False):
        scaler = torch.amp.GradScaler("cpu", enabled=enabled)
        load_scaler_state(scaler, state)
        if enabled:
            assert scaler.get_scale() == (1024.0 if saved_enabled else 65536.0)


def test_context_run_writes_it_into_the_model(tmp_path_factory, tmp_path):
    data = tiny_cohort_dir(tmp_path_factory)
    result = train(TrainConfig(data=str(data), sources=["T1w"], target="T2w",
                               out=str(tmp_path / "run"), context=1,
                               **{**TINY, "epochs": 1}))
    state = load_checkpoint(result.best_checkpoint)
    meta = checkpoint_metadata(state)
    assert meta.context == 1 and meta.input_channels == 3
    assert state["model_config"]["in_channels"] == 3 and state["parity_slices"].shape[1] == 3
    sub = Cohort.discover(data).subject(state["split"]["test"][0])
    out = synthesize_with_checkpoint(state, [sub.load("T1w")])
    assert out.shape == sub.load("T1w").shape
    with pytest.raises(InputError, match="context=1"):
        train(TrainConfig(data=str(data), sources=["T1w"], target="T2w",
                          out=str(tmp_path / "run"), context=2, **{**TINY, "epochs": 2}),
              resume=True)


def _shift(source, target, rng):
    """A transform whose result shows which (seed, epoch, position) drew it."""
    return source + np.float32(rng.integers(1000)), target


def test_persistent_workers_see_each_epoch(tmp_path_factory, tmp_path):
    entries = _cache(tmp_path).ensure(_subjects(tmp_path_factory, 1))
    dataset = CachedSlices(entries, transform=_shift, seed=3)
    sampler = EpochSampler(len(dataset), 6, seed=3, batch_size=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, sampler=sampler, num_workers=1,
                                         persistent_workers=True)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        got = torch.cat([source for source, _ in loader])
        want = torch.stack([dataset[key][0] for key in sampler])
        assert torch.equal(got, want)
        order = epoch_order(len(dataset), 6, 3, epoch)
        plain = torch.stack([torch.from_numpy(dataset.read(i)[0][:, 0]) for i in order])
        shifts = (got - plain).flatten(1)
        assert (shifts == shifts[:, :1]).all()  # one rng draw per item, from its key
        assert shifts[:, 0].tolist() == [
            float(np.random.default_rng([3, epoch, p]).integers(1000)) for p in range(6)]
