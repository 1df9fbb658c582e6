"""An EPI series' read-out for distortion correction: every value checked, errors in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.registration.distortion_apply import rotate_bvecs, rotation_part
from mri2mri.runtime.registration.distortion_inputs import read_readout

SHAPE = (64, 80, 30)


def _sidecar(tmp_path: Path, meta: dict) -> Path:
    path = tmp_path / "sub-01_dwi.json"
    path.write_text(json.dumps(meta))
    return tmp_path / "sub-01_dwi.nii.gz"


def test_readout_from_the_sidecar_and_from_the_echo_spacing(tmp_path: Path) -> None:
    dwi = _sidecar(tmp_path, {"PhaseEncodingDirection": "j-", "TotalReadoutTime": 0.05})
    r = read_readout(dwi, SHAPE)
    assert (r.pe_axis, r.pe_sign, r.total_readout_time) == (1, -1, 0.05)
    dwi = _sidecar(tmp_path, {"PhaseEncodingDirection": "i", "EffectiveEchoSpacing": 0.0005})
    r = read_readout(dwi, SHAPE)
    assert r.total_readout_time == pytest.approx(0.0005 * 63) and "EffectiveEchoSpacing" in \
        r.origin["TotalReadoutTime"]


def test_options_fill_what_the_sidecar_lacks(tmp_path: Path) -> None:
    dwi = _sidecar(tmp_path, {})
    r = read_readout(dwi, SHAPE, phase_encoding="j", total_readout_time=0.04)
    assert (r.phase_encoding, r.total_readout_time) == ("j", 0.04)
    assert r.origin == {"PhaseEncodingDirection": "option", "TotalReadoutTime": "option"}
    # No sidecar at all: the options are enough.
    r = read_readout(tmp_path / "sub-02_dwi.nii.gz", SHAPE, phase_encoding="k-",
                     total_readout_time=0.03)
    assert (r.pe_axis, r.pe_sign) == (2, -1)


@pytest.mark.parametrize(("meta", "options", "words"), [
    ({"TotalReadoutTime": 0.05}, {}, "PhaseEncodingDirection is missing"),
    ({"PhaseEncodingDirection": "j"}, {}, "TotalReadoutTime is missing"),
    ({"PhaseEncodingDirection": "y", "TotalReadoutTime": 0.05}, {}, "is not one of"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": -1}, {}, "positive number"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": 50}, {}, "milliseconds"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05, "EffectiveEchoSpacing": 0.001},
     {}, "contradicts EffectiveEchoSpacing"),
    ({"PhaseEncodingDirection": "j", "EffectiveEchoSpacing": 0.0005, "ReconMatrixPE": 96}, {},
     "ReconMatrixPE is 96"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05},
     {"phase_encoding": "j-"}, "--phase-encoding-direction says"),
    ({"PhaseEncodingDirection": "j", "TotalReadoutTime": 0.05},
     {"total_readout_time": 0.07}, "--total-readout-time says"),
])
def test_missing_or_contradictory_values_are_one_line_errors_naming_the_sidecar(
        tmp_path: Path, meta: dict, options: dict, words: str) -> None:
    dwi = _sidecar(tmp_path, meta)
    with pytest.raises(InputError) as err:
        read_readout(dwi, SHAPE, **options)
    message = str(err.value)
    assert words in message and "\n" not in message
    assert message.startswith(str(tmp_path / "sub-01_dwi.json"))


def test_a_broken_sidecar_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "sub-01_dwi.json").write_text("{not json")
    with pytest.raises(InputError, match="not a readable JSON sidecar"):
        read_readout(tmp_path / "sub-01_dwi.nii.gz", SHAPE)


def test_bvecs_turn_with_the_rigid_map() -> None:
    """Content moved by a rotation about the world's z axis: every b-vector turns with it (in
    world space), and FSL's b-vectors turn the other way in x for a radiological grid."""
    a = np.deg2rad(10.0)
    rigid = np.eye(4)
    rigid[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
    rigid[:3, 3] = [3.0, -2.0, 1.0]
    bvecs = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]).T
    las = np.diag([-2.0, 2.0, 2.5, 1.0])  # negative determinant: FSL's voxel axes as they are
    out = rotate_bvecs(bvecs, las, rigid)
    world_in = np.diag([-1.0, 1.0, 1.0]) @ bvecs
    np.testing.assert_allclose(np.diag([-1.0, 1.0, 1.0]) @ out, rigid[:3, :3] @ world_in,
                               atol=1e-12)
    ras = np.diag([2.0, 2.0, 2.5, 1.0])  # positive determinant: FSL flips x
    out = rotate_bvecs(bvecs, ras, rigid)
    flip = np.diag([-1.0, 1.0, 1.0])
    np.testing.assert_allclose(flip @ out, rigid[:3, :3] @ flip @ bvecs, atol=1e-12)
    assert np.allclose(out[:, 3], 0) and np.allclose(np.linalg.norm(out[:, :3], axis=0), 1)
    np.testing.assert_allclose(rotate_bvecs(bvecs, ras, np.eye(4)), bvecs, atol=1e-12)
    np.testing.assert_allclose(rotation_part(2.0 * rigid[:3, :3]), rigid[:3, :3], atol=1e-12)
