"""The one orthogonal-view helper (data/preview.py), shared by previews, QC and the demo."""

from __future__ import annotations

import numpy as np
import pytest

from mri2mri.data.preview import orthogonal_views, view_aspects


def test_views_pass_through_the_centre_and_face_up() -> None:
    volume = np.zeros((5, 6, 7))
    volume[1, 2, 3] = 1.0
    axial, coronal, sagittal = orthogonal_views(volume, centre=(1, 2, 3))
    assert axial.shape == (6, 5) and coronal.shape == (7, 5) and sagittal.shape == (7, 6)
    # Transposed for imshow(origin="lower"): rows are the second axis (A or S), columns R.
    assert axial[2, 1] == coronal[3, 1] == sagittal[3, 2] == 1.0
    middle = orthogonal_views(np.arange(5 * 6 * 7).reshape(5, 6, 7))
    np.testing.assert_array_equal(middle[0], np.arange(5 * 6 * 7).reshape(5, 6, 7)[:, :, 3].T)


def test_aspects_follow_the_voxel_sizes() -> None:
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    affine[:3, :3] = affine[:3, :3] @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])  # rotated
    assert view_aspects(affine) == pytest.approx([0.5, 1.5, 3.0])  # voxels 2 x 1 x 3 mm
