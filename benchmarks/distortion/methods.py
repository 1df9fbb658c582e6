"""The methods compared: no correction, rigid, affine, SyN-SDC-like, ours, and the reference.

Each returns the same thing, `Answer`: for every voxel of the b=0's grid, the position in
the acquired b=0 it is read from (see `metrics`), the corrected mean b=0, and its CPU
seconds by stage. Ours is exactly what `mri2mri-register --correct-distortion` runs
(`runtime.registration.distortion`); the reference is the same field estimation given the
true undistorted b=0 instead of the synthesized one (no model, no rigid step: the upper
bound of the estimation); SyN-SDC-like registers the distorted b=0 to the T1w itself along
the phase-encoding axis with mutual information, as SDCFlows' fieldmap-less SyN does
(ANTs, optional extra).
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.registration.align import Registration, register_images
from mri2mri.runtime.registration.distortion import reference_on_grid, synthesize_b0
from mri2mri.runtime.registration.distortion_apply import sample_positions
from mri2mri.runtime.registration.distortion_field import (
    Displacement,
    FieldSettings,
    estimate_displacement,
)
from mri2mri.runtime.registration.grids import within
from mri2mri.runtime.registration.masks import brain_mask

NONE, RIGID, AFFINE, SYN_SDC, OURS, REFERENCE = ("none", "rigid", "affine", "syn_sdc", "ours",
                                                 "reference")
METHODS = (NONE, RIGID, AFFINE, SYN_SDC, OURS, REFERENCE)
#: SyN-SDC-like: ANTs SyN, Mattes mutual information (32 bins), gradient step 0.2, update
#: and total field smoothing 3 and 1 voxels, 40x20x10 iterations (ANTsPy's pyramid: shrink
#: 4x2x1, smoothing 2x1x0 voxels). The most accurate of the variants tried on the head + EPI
#: cohort's first subject, SDCFlows' own mutual-information stage (sdcflows/data/sd_syn.json:
#: SyN[1.6, 4, 4], 100x50x0) included (docs/registration.md, "Distortion correction").
SYN_SDC_SETTINGS = {"syn_metric": "mattes", "syn_sampling": 32, "reg_iterations": (40, 20, 10),
                    "grad_step": 0.2, "flow_sigma": 3, "total_sigma": 1}


@dataclass
class Answer:
    """One method's answer for one subject."""

    positions: np.ndarray  # (3, N) positions in the acquired b=0, per voxel of its grid
    corrected: np.ndarray  # the acquired mean b=0 read at those positions (x Jacobian)
    cpu: dict[str, float] = field(default_factory=dict)
    field_mm: np.ndarray | None = None


class Subject:
    """One subject's inputs, and the rigid registration every registration method starts from."""

    def __init__(self, t1w: nib.Nifti1Image, b0: nib.Nifti1Image, pe_axis: int) -> None:
        self.t1w, self.b0, self.pe_axis = t1w, b0, pe_axis
        self.data = np.asarray(b0.dataobj, np.float32)
        self.zooms = nib.affines.voxel_sizes(b0.affine)
        self._rigid: tuple[Registration, float] | None = None

    def rigid(self) -> tuple[Registration, float]:
        """The T1w registered rigidly to the b=0 (`fast`), and its CPU seconds."""
        if self._rigid is None:
            cpu = time.process_time()
            reg = register_images(self.t1w, self.b0, transform="rigid", settings="fast")
            self._rigid = (reg, time.process_time() - cpu)
        return self._rigid

    def grid(self) -> np.ndarray:
        return np.indices(self.data.shape, dtype=np.float64).reshape(3, -1)

    def linear(self, matrix: np.ndarray) -> np.ndarray:
        """Positions of a registration alone: output voxel -> acquired voxel."""
        vox = np.linalg.inv(self.b0.affine) @ np.linalg.inv(matrix) @ self.b0.affine
        return vox[:3, :3] @ self.grid() + vox[:3, 3:4]

    def read(self, positions: np.ndarray, jacobian: np.ndarray | None = None) -> np.ndarray:
        from scipy import ndimage

        values = ndimage.map_coordinates(self.data, positions, order=3, mode="constant")
        if jacobian is not None:
            values = values * jacobian
        return np.maximum(values, 0.0).reshape(self.data.shape)

    def with_field(self, displacement: Displacement, rigid: np.ndarray | None) -> Answer:
        positions, jacobian = sample_positions(self.data.shape, self.b0.affine, displacement,
                                               rigid)
        return Answer(positions, self.read(positions, jacobian), field_mm=displacement.mm)


def none(subject: Subject) -> Answer:
    grid = subject.grid()
    return Answer(grid, subject.data.copy(), {})


def rigid(subject: Subject) -> Answer:
    reg, cpu = subject.rigid()
    positions = subject.linear(reg.affine)
    return Answer(positions, subject.read(positions), {"rigid": cpu})


def affine(subject: Subject) -> Answer:
    """A 12-parameter affine T1w -> b=0, inside the b=0's brain mask (without it, the affine
    stretches the b=0's brain onto the T1w's head: 16-20 % scaling on the head cohort)."""
    cpu = time.process_time()
    reg = register_images(subject.t1w, subject.b0, transform="affine", settings="fast",
                          static_mask=brain_mask(subject.b0))
    positions = subject.linear(reg.affine)
    return Answer(positions, subject.read(positions), {"affine": time.process_time() - cpu})


def ours(subject: Subject, model: str, settings: FieldSettings) -> Answer:
    """Rigid, synthesis, field: the runtime's own steps (`distortion.compute_correction`)."""
    reg, rigid_cpu = subject.rigid()
    cpu = time.process_time()
    synthesized = synthesize_b0(model, subject.t1w, "T1w", lambda _m: None, device="cpu")
    reference = reference_on_grid(synthesized.image, reg, subject.b0)
    synth_cpu = time.process_time() - cpu
    brain = brain_mask(image_like(subject.b0, reference))
    displacement = estimate_displacement(subject.data, reference, subject.zooms,
                                         subject.pe_axis, settings=settings, brain=brain)
    answer = subject.with_field(displacement, reg.affine)
    answer.cpu = {"rigid": rigid_cpu, "synthesis": synth_cpu,
                  "field": displacement.cpu_seconds}
    return answer


def reference(subject: Subject, undistorted: np.ndarray, settings: FieldSettings) -> Answer:
    """The same field estimation against the true undistorted b=0 (already aligned)."""
    brain = brain_mask(image_like(subject.b0, undistorted))
    displacement = estimate_displacement(subject.data, undistorted, subject.zooms,
                                         subject.pe_axis, settings=settings, brain=brain)
    answer = subject.with_field(displacement, None)
    answer.cpu = {"field": displacement.cpu_seconds}
    return answer


def ants_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ants") is not None


def syn_sdc(subject: Subject, brain: np.ndarray) -> Answer:
    """The distorted b=0 registered to the T1w (on the b=0's grid by the rigid transform) with
    ANTs SyN, mutual information, restricted to the PE axis. SDCFlows registers to a
    brain-extracted anatomical reference: here the T1w times `brain` (the true brain mask,
    grown by 4 mm), which is also the metric's mask."""
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")
    import ants

    reg, rigid_cpu = subject.rigid()
    cpu = time.process_time()
    region = within(brain, subject.b0.affine, 4.0)
    t1w = np.asarray(reg.resample(subject.t1w, subject.b0).dataobj, np.float32) * region
    spacing = tuple(float(z) for z in subject.zooms)
    restrict = tuple(1 if a == subject.pe_axis else 0 for a in range(3))
    mask = ants.from_numpy(region.astype(np.float32), spacing=spacing)
    out = ants.registration(ants.from_numpy(t1w, spacing=spacing),
                            ants.from_numpy(subject.data, spacing=spacing),
                            type_of_transform="SyNOnly", initial_transform="identity",
                            mask=mask, restrict_transformation=restrict, **SYN_SDC_SETTINGS)
    warp = ants.image_read(out["fwdtransforms"][0]).numpy()[..., subject.pe_axis]
    for path in {*out["fwdtransforms"], *out["invtransforms"]}:
        if os.path.isfile(path) and path.startswith(tempfile.gettempdir()):
            os.remove(path)
    displacement = Displacement(warp.astype(np.float32), subject.pe_axis, subject.zooms)
    answer = subject.with_field(displacement, reg.affine)
    answer.cpu = {"rigid": rigid_cpu, "field": time.process_time() - cpu}
    return answer
