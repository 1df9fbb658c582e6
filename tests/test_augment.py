"""Augmentation and contrast randomisation: spec parsing and the transform hook's contract."""

from __future__ import annotations

import numpy as np
import pytest

from mri2mri.train.augment import (
    PRESETS,
    AugmentSpec,
    build_transform,
    jittered_curve,
    random_monotone_curve,
)

H, W = 40, 48


def _brain(rng: np.random.Generator) -> np.ndarray:
    """A normalised slice: background -1, an ellipse of three 'tissues' in (-1, 1]."""
    y, x = np.mgrid[:H, :W]
    r = np.hypot((y - H / 2) / 15, (x - W / 2) / 18)
    img = np.full((H, W), -1.0)
    img[r < 1.0] = -0.6
    img[r < 0.8] = 0.2
    img[r < 0.5] = 0.9
    return (img + 0.05 * rng.standard_normal((H, W)) * (r < 1.0)).astype(np.float32)


def test_presets_overrides_and_canonical_text():
    assert AugmentSpec.parse("none") == AugmentSpec() and not AugmentSpec().active
    strong = AugmentSpec.parse("strong,rotate=10,noise=0")
    assert strong.rotate == 10 and strong.noise == 0 and strong.flip == PRESETS["strong"].flip
    assert AugmentSpec.parse(strong.to_string()) == strong
    assert "noise" not in strong.to_string()
    assert AugmentSpec.parse("randomize=0.5").to_string() == "randomize=0.5"
    assert AugmentSpec.parse("light").to_dict()["flip"] == 0.5
    assert build_transform("none") is None and build_transform("strong") is not None


@pytest.mark.parametrize(("text", "match"), [
    ("medium", "unknown preset"), ("strong,spin=3", "unknown option"),
    ("light,noise=-1", ">= 0"), ("flip=2", "probability"), ("rotate=x", "not a number"),
    ("", "empty"), ("lowres=0.5", "factor")])
def test_bad_specs_are_rejected(text, match):
    with pytest.raises(ValueError, match=match):
        AugmentSpec.parse(text)


def test_same_rng_same_item_and_positions_differ():
    t = build_transform("strong,randomize=0.5")
    rng = np.random.default_rng(0)
    source = np.stack([np.stack([_brain(rng)] * 3)] * 2)  # (S=2, 2K+1=3, H, W)
    target = _brain(rng)[None]
    a = t(source.copy(), target.copy(), np.random.default_rng([0, 1, 5]))
    b = t(source.copy(), target.copy(), np.random.default_rng([0, 1, 5]))
    c = t(source.copy(), target.copy(), np.random.default_rng([0, 1, 6]))
    assert a[0].shape == source.shape and a[1].shape == target.shape
    assert a[0].dtype == np.float32 and a[1].dtype == np.float32
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_geometry_is_identical_for_every_channel_and_the_target():
    t = build_transform("flip=1,rotate=15,scale=0.1,translate=0.1")
    image = _brain(np.random.default_rng(1))
    source = np.broadcast_to(image, (2, 3, H, W)).copy()
    for position in range(4):
        out_s, out_t = t(source.copy(), image[None].copy(), np.random.default_rng([3, 0, position]))
        assert not np.array_equal(out_t[0], image)  # it did move
        for channel in out_s.reshape(-1, H, W):
            np.testing.assert_array_equal(channel, out_t[0])
    _, flipped_t = build_transform("flip=1")(source.copy(), image[None].copy(),
                                                     np.random.default_rng(0))
    np.testing.assert_array_equal(flipped_t[0], image[::-1])  # axis -2: left-right


def test_intensity_is_per_source_same_across_context_never_the_target():
    t = build_transform("gamma=0.3,contrast=0.3,bias=0.3,noise=0.05,lowres=2,randomize=0.5")
    rng = np.random.default_rng(2)
    image = _brain(rng)
    source = np.broadcast_to(image, (2, 3, H, W)).copy()
    target = _brain(rng)[None]
    for position in range(4):
        out_s, out_t = t(source.copy(), target.copy(), np.random.default_rng([0, 0, position]))
        np.testing.assert_array_equal(out_t, target)
        assert out_s.shape == source.shape
        assert not np.array_equal(out_s[0], out_s[1])  # each source draws its own
    # Without per-pixel noise, a source's context slices (equal here) stay equal: one
    # remapping, gamma, bias field and resolution per source.
    quiet = build_transform("gamma=0.3,contrast=0.3,bias=0.3,lowres=2,randomize=0.5")
    out_s, _ = quiet(source.copy(), target.copy(), np.random.default_rng([0, 0, 9]))
    for stack in out_s:
        np.testing.assert_array_equal(stack[0], stack[1])
        np.testing.assert_array_equal(stack[0], stack[2])


def test_contrast_randomisation_keeps_tissue_order_and_background():
    t = build_transform("randomize=1")
    image = _brain(np.random.default_rng(3))
    background = image == -1.0
    changed = 0
    for position in range(10):
        out, _ = t(image[None, None].copy(), image[None].copy(),
                   np.random.default_rng([0, 0, position]))
        out = out[0, 0]
        np.testing.assert_allclose(out[background], -1.0, atol=1e-6)
        order = np.argsort(image[~background], kind="stable")
        assert np.all(np.diff(out[~background][order]) >= -1e-6)  # monotone: order kept
        changed += not np.allclose(out, image, atol=0.05)
    assert changed >= 8


def test_intensity_curves():
    rng = np.random.default_rng(4)
    for _ in range(20):
        x, y = random_monotone_curve(rng)
        assert y[0] == 0 and y[-1] == 1 and np.all(np.diff(y) >= 0)
        xj, yj = jittered_curve(rng, 0.3)
        assert np.all(np.diff(yj) >= 0) and np.abs(yj - xj).max() <= 0.3 * xj[1] + 1e-12
