"""Round trips of the shared preprocessing: orientation, padding, normalisation, resampling."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from mri2mri.runtime.imaging.normalize import (
    denormalize,
    foreground_mask,
    intensity_scale,
    normalize,
)
from mri2mri.runtime.imaging.orientation import to_canonical
from mri2mri.runtime.imaging.preprocess import prepare_sources, prepare_target, restore_image
from mri2mri.runtime.imaging.resample import resample_to, same_grid
from mri2mri.runtime.imaging.slicing import SliceGeometry, from_slices, padding_for, to_slices
from mri2mri.runtime.metadata import Normalisation


def oblique_affine() -> np.ndarray:
    """A sheared-free oblique affine: 1.2 x 1.1 x 2.5 mm voxels rotated about two axes."""
    a, b = np.deg2rad(17.0), np.deg2rad(-9.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ np.diag([-1.2, 1.1, 2.5])
    aff[:3, 3] = [40.0, -30.0, 12.0]
    return aff


AXCODES = [("R", "A", "S"), ("L", "P", "S"), ("P", "I", "R"), ("A", "L", "I")]


def _affine_for(codes: tuple[str, str, str], zooms=(1.0, 1.5, 2.0)) -> np.ndarray:
    ornt = nib.orientations.axcodes2ornt(codes)
    aff = np.zeros((4, 4))
    aff[3, 3] = 1
    for i, (axis, flip) in enumerate(ornt):
        aff[int(axis), i] = flip * zooms[i]
    aff[:3, 3] = [-10.0, 20.0, 5.0]
    return aff


@pytest.mark.parametrize("codes", AXCODES)
def test_canonical_round_trip_is_exact(codes):
    rng = np.random.default_rng(0)
    data = rng.random((7, 9, 11)).astype(np.float32)
    img = nib.Nifti1Image(data, _affine_for(codes))
    view = to_canonical(img, data)
    assert nib.aff2axcodes(view.affine) == ("R", "A", "S")
    # Same voxel, same world position: canonical data at canonical index maps to the same point.
    ijk = np.array([1, 2, 3])
    world = img.affine[:3, :3] @ ijk + img.affine[:3, 3]
    cijk = np.round(np.linalg.solve(view.affine[:3, :3], world - view.affine[:3, 3])).astype(int)
    assert view.data[tuple(cijk)] == data[tuple(ijk)]
    np.testing.assert_array_equal(view.restore(view.data), data)


def test_canonical_of_oblique_affine_round_trips():
    data = np.random.default_rng(1).random((6, 8, 5)).astype(np.float32)
    img = nib.Nifti1Image(data, oblique_affine())
    view = to_canonical(img, data)
    np.testing.assert_array_equal(view.restore(view.data), data)


@pytest.mark.parametrize("shape", [(33, 47, 5), (64, 64, 3), (1, 130, 2)])
@pytest.mark.parametrize("geometry", [SliceGeometry(16), SliceGeometry(32, 64), SliceGeometry(8)])
def test_padding_round_trip_is_exact(shape, geometry):
    vol = np.random.default_rng(2).random(shape).astype(np.float32)
    padding = padding_for(shape, geometry)
    slices = to_slices(vol, padding)
    z, c, h, w = slices.shape
    assert (z, c) == (shape[2], 1)
    assert h % geometry.multiple == 0 and w % geometry.multiple == 0
    assert h >= geometry.min_size and w >= geometry.min_size
    np.testing.assert_array_equal(from_slices(slices, padding), vol)
    # Padding is centred (differs by at most one pixel) and filled with the background level.
    assert abs(padding.before[0] - padding.after[0]) <= 1
    if padding.before[0]:
        assert np.all(slices[:, :, 0, :] == -1.0)


def test_normalisation_inverse_and_range():
    rng = np.random.default_rng(3)
    data = np.zeros((40, 40, 20), np.float32)
    data[5:35, 5:35, 3:17] = rng.uniform(100, 900, (30, 30, 14))
    mask = foreground_mask(data)
    assert mask[20, 20, 10] and not mask[0, 0, 0]
    scale = intensity_scale(data, mask, 99.5)
    assert scale == pytest.approx(np.percentile(data[mask], 99.5))
    normed = normalize(data, scale)
    assert normed.min() == pytest.approx(-1.0) and np.percentile(normed[mask], 99.5) == \
        pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(denormalize(normed, scale), data, rtol=1e-6, atol=1e-3)


def test_normalisation_rejects_empty_foreground():
    with pytest.raises(ValueError, match="no positive"):
        intensity_scale(np.zeros((5, 5, 5)), np.zeros((5, 5, 5), bool))


def test_resample_identity_and_world_alignment():
    rng = np.random.default_rng(4)
    data = rng.random((10, 12, 14)).astype(np.float32)
    img = nib.Nifti1Image(data, _affine_for(("R", "A", "S")))
    assert resample_to(img, img) is img
    # Flip the storage order: same world content, different grid.
    flipped = nib.Nifti1Image(data[::-1].copy(), img.affine @ np.array(
        [[-1, 0, 0, 9], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float))
    assert not same_grid(flipped, img)
    np.testing.assert_allclose(resample_to(flipped, img).get_fdata(), data, atol=1e-5)


def _head(shape=(30, 34, 12), seed=5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    head = ((x**2 + y**2 + z**2) < 0.7).astype(np.float32)
    return head * rng.uniform(200, 800, shape).astype(np.float32)


@pytest.mark.parametrize("affine", [_affine_for(("R", "A", "S")), _affine_for(("L", "P", "S")),
                                    oblique_affine()])
def test_prepare_and_restore_keep_geometry_and_values(affine):
    data = _head()
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=2)
    norm = Normalisation()
    prepared = prepare_sources([img], SliceGeometry(16), norm)
    assert prepared.slices.shape[1] == 1 and prepared.slices.shape[2] % 16 == 0
    # Feeding the normalised source back as "prediction" with the source's scale
    # must restore the source exactly, in its original voxel order and header.
    out = restore_image(prepared.slices, prepared, prepared.scales[0], description="test")
    np.testing.assert_allclose(out.get_fdata(), data, rtol=1e-5, atol=1e-3)
    assert out.shape == img.shape
    np.testing.assert_allclose(out.affine, img.affine)
    assert int(out.header["qform_code"]) == 1 and int(out.header["sform_code"]) == 2
    assert out.get_data_dtype() == np.float32
    assert out.header["descrip"].tobytes().startswith(b"test")


def test_prepare_target_resamples_onto_source_grid():
    src = nib.Nifti1Image(_head(), _affine_for(("R", "A", "S")))
    tgt_data = _head(seed=6)
    # Target stored LPS on a different grid, same world content as a RAS image of tgt_data.
    ras = nib.Nifti1Image(tgt_data, src.affine)
    lps_data = tgt_data[::-1, ::-1]
    lps_aff = src.affine @ np.array([[-1, 0, 0, tgt_data.shape[0] - 1],
                                     [0, -1, 0, tgt_data.shape[1] - 1],
                                     [0, 0, 1, 0], [0, 0, 0, 1]], float)
    lps = nib.Nifti1Image(np.ascontiguousarray(lps_data), lps_aff)
    prepared = prepare_sources([src], SliceGeometry(16), Normalisation())
    a, sa = prepare_target(ras, prepared, Normalisation())
    b, sb = prepare_target(lps, prepared, Normalisation())
    assert a.shape == prepared.slices.shape and sa == pytest.approx(sb)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_context_stacks_are_source_major_with_repeated_edges():
    from mri2mri.runtime.imaging.slicing import context_indices, stack_context

    z, c = 5, 2
    slices = np.arange(z * c, dtype=np.float32).reshape(z, c, 1, 1) * np.ones((1, 1, 3, 4),
                                                                               np.float32)
    assert stack_context(slices, 0) is slices
    stacks = stack_context(slices, 1)
    assert stacks.shape == (z, c * 3, 3, 4)
    # slice 0, source 1: neighbours -1 (repeats 0), 0, 1
    assert [stacks[0, 3 + j, 0, 0] for j in range(3)] == [slices[i, 1, 0, 0] for i in (0, 0, 1)]
    # slice 4 (last), source 0: 3, 4, 4
    assert [stacks[4, j, 0, 0] for j in range(3)] == [slices[i, 0, 0, 0] for i in (3, 4, 4)]
    assert context_indices(2, 5, 2).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        context_indices(0, 5, -1)
