"""A small EPI phantom with a known susceptibility displacement, for the distortion tests.

The object is a textured ellipsoid with dark "ventricles"; the distortion is the
simulator's own read-out model (`mri2mri.data.simulate.epi.displace`: each sample's signal
moves along the phase-encoding axis, summed on a grid four times finer along it), so the
displacement that undoes it is known exactly. A stand-in T1w -> b0 model (`channel_picker`)
copies its input, so a "T1w" that is the undistorted object gives an exact synthesized b=0.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from onnx_fixtures import channel_picker, nifti
from scipy import ndimage

from mri2mri.data.simulate.epi import block_mean, displace

SHAPE = (40, 48, 24)
ZOOMS = (2.5, 2.5, 3.0)
OVERSAMPLE = 4
TOTAL_READOUT_TIME = 0.05


def grid_affine() -> np.ndarray:
    """An oblique LAS grid (like a scanner's EPI), centred near the world origin."""
    a = np.deg2rad(6.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    affine = np.eye(4)
    affine[:3, :3] = rx @ np.diag([-ZOOMS[0], ZOOMS[1], ZOOMS[2]])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
    return affine


def obj(points: np.ndarray) -> np.ndarray:
    """The object's signal at voxel positions (3, N) of the EPI grid (smooth texture)."""
    c = (np.array(SHAPE) - 1)[:, None] / 2
    r = (points - c) / (np.array([16.0, 20.0, 10.0])[:, None])
    inside = (r ** 2).sum(0)
    body = 1.0 / (1.0 + np.exp((inside - 1.0) * 12.0))
    texture = 1.0 + 0.25 * np.sin(points[0] / 2.1) * np.cos(points[1] / 2.7) \
        + 0.15 * np.sin(points[2] / 1.9 + points[1] / 3.3)
    holes = sum(1.0 / (1.0 + np.exp((((points - c - np.array(o)[:, None]) / 3.5) ** 2).sum(0)
                                   * 4.0 - 4.0)) for o in ([-5, 3, 0], [5, 3, 0], [0, -8, 2]))
    return 1000.0 * body * texture * (1.0 - 0.7 * holes)


def shift_voxels(peak: float) -> np.ndarray:
    """A smooth displacement along j (voxels) on the EPI grid: one frontal hot spot."""
    i, j, k = np.indices(SHAPE, dtype=float)
    c = np.array(SHAPE) / 2 + np.array([0.0, 9.0, -2.0])
    return peak * np.exp(-((i - c[0]) ** 2 + (j - c[1]) ** 2 + (k - c[2]) ** 2) / (2 * 7.0 ** 2))


def distorted(peak: float) -> tuple[np.ndarray, np.ndarray]:
    """(the acquired image, the true shift in voxels at each undistorted voxel)."""
    fine_shape = (SHAPE[0], SHAPE[1] * OVERSAMPLE, SHAPE[2])
    i, j, k = np.indices(fine_shape, dtype=float)
    j = j / OVERSAMPLE + 0.5 / OVERSAMPLE - 0.5
    points = np.stack([i.ravel(), j.ravel(), k.ravel()])
    shift = shift_voxels(peak)
    fine_shift = ndimage.map_coordinates(shift, points, order=1, mode="nearest")
    signal = obj(points).reshape(fine_shape)
    moved = displace(signal, (fine_shift * OVERSAMPLE).reshape(fine_shape), axis=1)
    return block_mean(moved, (1, OVERSAMPLE, 1)), shift


def write_case(folder: Path, peak: float = 2.0, pe: str = "j", sidecar: dict | None = None,
               *, subject: str = "01", session: str | None = None) -> dict[str, Path]:
    """A BIDS-named DWI (4 volumes), its .bval/.bvec/.json, a T1w and a stand-in model.

    `subject`/`session`: the labels (several calls on one folder make a dataset).
    """
    image, _ = distorted(peak)
    affine = grid_affine()
    dwi = np.stack([image, image * 1.02, image * 0.5, image * 0.4], axis=3).astype(np.float32)
    where = folder / f"sub-{subject}" / (f"ses-{session}" if session else "")
    prefix = f"sub-{subject}" + (f"_ses-{session}" if session else "")
    (where / "dwi").mkdir(parents=True)
    (where / "anat").mkdir(parents=True)
    paths = {"dwi": where / "dwi" / f"{prefix}_dwi.nii.gz",
             "t1w": where / "anat" / f"{prefix}_T1w.nii.gz"}
    nib.save(nifti(dwi, affine), paths["dwi"])
    paths["dwi"].with_name(f"{prefix}_dwi.bval").write_text("0 5 1000 1000\n")
    bvecs = np.array([[0, 0, 1, 0], [0, 0, 0, 0.6], [0, 0, 0, 0.8]])
    paths["dwi"].with_name(f"{prefix}_dwi.bvec").write_text(
        "\n".join(" ".join(f"{v:g}" for v in row) for row in bvecs) + "\n")
    meta = {"PhaseEncodingDirection": pe, "TotalReadoutTime": TOTAL_READOUT_TIME} \
        if sidecar is None else sidecar
    paths["dwi"].with_name(f"{prefix}_dwi.json").write_text(json.dumps(meta))
    points = np.indices(SHAPE, dtype=float).reshape(3, -1)
    nib.save(nifti(obj(points).reshape(SHAPE).astype(np.float32), affine), paths["t1w"])
    (folder / "dataset_description.json").write_text(json.dumps(
        {"Name": "phantom", "BIDSVersion": "1.10.0", "DatasetType": "raw"}))
    paths["model"] = channel_picker(folder / "t1w_to_b0.onnx", ["T1w"], "b0")
    return paths
