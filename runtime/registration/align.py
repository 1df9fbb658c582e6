"""Rigid/affine registration of two volumes with DIPY's mutual-information pipeline.

Why a module of our own around DIPY: the study's settings (`SETTINGS["study"]`)
are slow (tens of seconds per pair), and the product needs a fast default
(`SETTINGS["fast"]`) whose answer stays within 0.1 mm / 0.002 rad of the study's.
The fast preset gets its speed from registering at a coarser working resolution
(anti-aliased), from optimising rotations about the brain's centre instead of the
world origin (better conditioned), from fewer pyramid levels, and from a short
native-resolution refinement that samples a quarter of the static voxels; see
docs/registration.md for the measurements.

Convention (DIPY's `AffineMap.affine`): `Registration.affine` maps a point of
the STATIC image's world (RAS+ mm) space to the corresponding point of the MOVING
image's world space. Resampling the moving image onto the static grid therefore
reads the moving image at `affine @ static_voxel_to_world`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import nibabel as nib
import numpy as np
from dipy.align.imaffine import AffineRegistration, MutualInformationMetric
from dipy.align.transforms import (
    AffineTransform3D,
    RigidTransform3D,
    TranslationTransform3D,
)
from scipy import ndimage

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.normalize import foreground_mask

TRANSFORMS = ("rigid", "affine")


@dataclass(frozen=True)
class RegistrationSettings:
    """One complete recipe for DIPY's pipeline: centre of mass -> translation -> rigid [-> affine].

    `level_iters`, `sigmas` (in voxels of each level, DIPY's convention) and
    `factors` describe the pyramid, coarsest level first. `working_voxel_mm`
    (None = native grids) resamples both images, anti-aliased, to voxels no
    smaller than this before registering. `centre_frame` optimises in a frame
    whose origin is the static foreground's centre of mass, so that a rotation
    does not drag a translation along with it. `gtol` is L-BFGS-B's gradient
    tolerance (DIPY's default is 1e-4). `crop_margin_mm` (None = no crop) crops the
    static image to its foreground box plus this margin: DIPY's dense metric visits
    every static voxel, and empty background only costs time. `refine_iters` > 0
    adds a last rigid pass on the native (cropped) grids with that many iterations;
    `refine_voxel_mm` (None = native) coarsens the static grid of that pass, and
    `refine_sampling_proportion` (None = dense) samples that share of its voxels
    (regular grid with DIPY's jitter, seeded) - the pass costs in proportion to the
    static points it visits. Sparse sampling ignores masks (DIPY's restriction).
    """

    name: str
    nbins: int = 32
    sampling_proportion: float | None = None
    level_iters: tuple[int, ...] = (10000, 1000, 100)
    sigmas: tuple[float, ...] = (5.0, 2.5, 0.0)
    factors: tuple[int, ...] = (4, 2, 1)
    working_voxel_mm: float | None = None
    centre_frame: bool = False
    translation_stage: bool = True
    gtol: float = 1e-4
    crop_margin_mm: float | None = None
    refine_iters: int = 0
    refine_voxel_mm: float | None = None
    refine_sampling_proportion: float | None = None

    def describe(self) -> dict[str, object]:
        """Plain dict for reports (summary.json, --help text)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


#: `study`: the study's public notebooks (32 bins, dense sampling, 10000/1000/100
#: iterations, sigmas 5/2.5/0 voxels, factors 4/2/1). `fast`: the product default.
SETTINGS: dict[str, RegistrationSettings] = {
    "study": RegistrationSettings(name="study"),
    "fast": RegistrationSettings(
        name="fast",
        nbins=32,
        sampling_proportion=None,
        level_iters=(100, 50),
        sigmas=(1.0, 0.0),
        factors=(2, 1),
        working_voxel_mm=4.0,
        centre_frame=True,
        translation_stage=False,
        gtol=1e-4,
        crop_margin_mm=10.0,
        refine_iters=20,
        refine_sampling_proportion=0.25,
    ),
}


@dataclass
class Registration:
    """The result: `affine` maps static world points to moving world points (DIPY's convention)."""

    affine: np.ndarray
    transform: str
    settings: str
    seconds: float
    static_shape: tuple[int, int, int]
    static_affine: np.ndarray
    #: The static image's header: a resliced image takes its codes and units.
    static_header: nib.Nifti1Header
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: CPU time of this process: a fairer speed measure than wall time on a busy machine.
    cpu_seconds: float = 0.0

    def resample(self, moving: nib.spatialimages.SpatialImage,
                 reference: nib.spatialimages.SpatialImage | None = None,
                 order: int = 1) -> nib.Nifti1Image:
        """The moving image resliced onto the static grid (or `reference`'s), zero outside.

        The result carries that grid's header (affine, qform/sform codes, units), as any
        image written on it would: the moving image's header describes another grid.
        Only the description is the moving image's: it says what the voxels are.
        """
        shape = self.static_shape if reference is None else tuple(reference.shape[:3])
        ref_affine = self.static_affine if reference is None else reference.affine
        vox = np.linalg.inv(moving.affine) @ self.affine @ ref_affine
        data = np.asarray(moving.dataobj, dtype=np.float32)
        out = ndimage.affine_transform(data, vox[:3, :3], vox[:3, 3], output_shape=shape,
                                       order=order, mode="constant", cval=0.0)
        if order > 1:  # spline overshoot must not make magnitude images negative
            np.maximum(out, 0, out=out)
        description = moving.header["descrip"].item().decode(errors="replace") \
            if "descrip" in moving.header else ""
        return image_like(self.static_header if reference is None else reference, out,
                          description)

    def inverse(self) -> np.ndarray:
        """The opposite direction: moving world points to static world points."""
        return np.linalg.inv(self.affine)


def get_settings(settings: str | RegistrationSettings) -> RegistrationSettings:
    """Look up a preset by name (or pass a custom `RegistrationSettings` through)."""
    if isinstance(settings, RegistrationSettings):
        return settings
    if settings not in SETTINGS:
        raise ValueError(f"unknown registration settings {settings!r}; "
                         f"choose from {', '.join(SETTINGS)}")
    return SETTINGS[settings]


def foreground_bounds(img: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    """World-space (min, max) corners of the axis-aligned box around the image's foreground."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = foreground_mask(data)
    idx = np.argwhere(mask) if mask.any() else np.argwhere(np.ones(data.shape[:3], bool))
    lo, hi = idx.min(0) - 0.5, idx.max(0) + 0.5
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                        for z in (lo[2], hi[2])])
    world = nib.affines.apply_affine(img.affine, corners)
    return world.min(0), world.max(0)


def check_overlap(moving: nib.spatialimages.SpatialImage,
                  static: nib.spatialimages.SpatialImage,
                  moving_name: str = "moving image", static_name: str = "static image") -> float:
    """Raise `InputError` unless the two foregrounds' world boxes overlap; return the overlap.

    The overlap is the intersection volume over the smaller box's volume. Two scans
    of one session overlap almost entirely; no overlap at all means a broken header
    or the wrong file, and the registration would only chase a centre-of-mass guess.
    """
    (mlo, mhi), (slo, shi) = foreground_bounds(moving), foreground_bounds(static)
    inter = np.clip(np.minimum(mhi, shi) - np.maximum(mlo, slo), 0, None)
    smaller = min(float(np.prod(mhi - mlo)), float(np.prod(shi - slo)))
    overlap = float(np.prod(inter)) / smaller if smaller > 0 else 0.0
    if overlap <= 0.0:
        raise InputError(moving_name, f"does not overlap {static_name} in world space "
                                      f"(foreground boxes {_box(mlo, mhi)} and {_box(slo, shi)} "
                                      "mm): check the headers or the files")
    return overlap


def _box(lo: np.ndarray, hi: np.ndarray) -> str:
    return "[" + ", ".join(f"{a:.0f}..{b:.0f}" for a, b in zip(lo, hi, strict=True)) + "]"


def _working_grid(data: np.ndarray, affine: np.ndarray, voxel_mm: float | None,
                  mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Downsample to voxels of at least `voxel_mm`, Gaussian anti-aliased; same field of view."""
    if voxel_mm is None:
        return data, affine, mask
    zooms = nib.affines.voxel_sizes(affine)
    ratio = np.maximum(voxel_mm / zooms, 1.0)
    if np.allclose(ratio, 1.0):
        return data, affine, mask
    # FWHM of the target voxel, less what the native voxel already integrates.
    sigma = np.sqrt(np.maximum(ratio ** 2 - 1.0, 0.0)) / (2.0 * np.sqrt(2.0 * np.log(2.0)))
    smooth = ndimage.gaussian_filter(data, sigma, mode="constant")
    shape = tuple(int(n) for n in np.ceil(np.array(data.shape[:3]) / ratio))
    offset = (ratio - 1.0) / 2.0  # new voxel centres sit at the centre of the old blocks
    out = ndimage.affine_transform(smooth, ratio, offset, output_shape=shape, order=1,
                                   mode="nearest")
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * ratio
    new_affine[:3, 3] = affine[:3, :3] @ offset + affine[:3, 3]
    new_mask = None
    if mask is not None:
        new_mask = ndimage.affine_transform(mask.astype(np.float32), ratio, offset,
                                            output_shape=shape, order=1, mode="constant") > 0.5
    return out, new_affine, new_mask


def _crop_to_foreground(data: np.ndarray, affine: np.ndarray, margin_mm: float | None,
                        mask: np.ndarray | None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Crop to the foreground's bounding box plus `margin_mm`; the affine keeps world positions."""
    if margin_mm is None:
        return data, affine, mask
    fg = foreground_mask(data.astype(np.float32))
    if not fg.any():
        return data, affine, mask
    zooms = nib.affines.voxel_sizes(affine)
    pad = np.ceil(margin_mm / zooms).astype(int)
    idx = np.argwhere(fg)
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, data.shape[:3])
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    cropped = affine.copy()
    cropped[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    return np.ascontiguousarray(data[box]), cropped, None if mask is None else mask[box]


def _translate(v: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = v
    return t


def register_images(moving: nib.spatialimages.SpatialImage,
                    static: nib.spatialimages.SpatialImage,
                    transform: str = "rigid",
                    settings: str | RegistrationSettings = "fast",
                    moving_mask: np.ndarray | None = None,
                    static_mask: np.ndarray | None = None,
                    progress: Callable[[str], None] | None = None) -> Registration:
    """Register `moving` to `static` with mutual information; return the static->moving map.

    Stages: centre of mass -> translation -> rigid (-> 12-parameter affine when
    `transform="affine"`). Masks (boolean, on each image's own grid) restrict the
    metric to those voxels; DIPY honours them only with dense sampling.
    `progress`, when given, is called with each stage's name as it starts.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    preset = get_settings(settings)
    check_overlap(moving, static)
    started, cpu_started = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}

    def stage(name: str) -> float:
        if progress is not None:
            progress(name)
        return time.perf_counter()

    t0 = stage("prepare")
    s_data, s_aff, s_mask = _working_grid(np.asarray(static.dataobj, dtype=np.float64),
                                          static.affine.astype(np.float64),
                                          preset.working_voxel_mm, static_mask)
    s_data, s_aff, s_mask = _crop_to_foreground(s_data, s_aff, preset.crop_margin_mm, s_mask)
    m_data, m_aff, m_mask = _working_grid(np.asarray(moving.dataobj, dtype=np.float64),
                                          moving.affine.astype(np.float64),
                                          preset.working_voxel_mm, moving_mask)
    # Optimise in a frame centred on the static foreground: rotations then pivot about
    # the brain, so the parameters are decoupled. The frame shift is undone at the end.
    shift = np.eye(4)
    if preset.centre_frame:
        com = ndimage.center_of_mass(np.where(foreground_mask(s_data.astype(np.float32)),
                                              s_data, 0.0))
        shift = _translate(-nib.affines.apply_affine(s_aff, com))
    s_aff_f, m_aff_f = shift @ s_aff, shift @ m_aff
    timings["prepare"] = time.perf_counter() - t0

    t0 = stage("centre of mass")
    c_static = nib.affines.apply_affine(s_aff_f, ndimage.center_of_mass(s_data))
    c_moving = nib.affines.apply_affine(m_aff_f, ndimage.center_of_mass(m_data))
    current = _translate(c_moving - c_static)
    timings["centre of mass"] = time.perf_counter() - t0

    metric = MutualInformationMetric(nbins=preset.nbins,
                                     sampling_proportion=preset.sampling_proportion)
    reg = AffineRegistration(metric=metric, level_iters=list(preset.level_iters),
                             sigmas=list(preset.sigmas), factors=list(preset.factors),
                             options={"gtol": preset.gtol}, verbosity=0)
    stages: list[tuple[str, object]] = []
    if preset.translation_stage:
        stages.append(("translation", TranslationTransform3D()))
    stages.append(("rigid", RigidTransform3D()))
    if transform == "affine":
        stages.append(("affine", AffineTransform3D()))
    masks = {"static_mask": s_mask, "moving_mask": m_mask} \
        if preset.sampling_proportion in (None, 1.0) else {}
    state = np.random.get_state()
    np.random.seed(0)  # DIPY jitters sparse samples with the global generator: keep runs repeatable
    try:
        for name, tf in stages:
            t0 = stage(name)
            reg.options = {"gtol": preset.gtol}
            result = reg.optimize(s_data, m_data, tf, None, static_grid2world=s_aff_f,
                                  moving_grid2world=m_aff_f, starting_affine=current, **masks)
            current = result.affine
            timings[name] = time.perf_counter() - t0
        if preset.refine_iters > 0 and preset.working_voxel_mm is not None:
            t0 = stage("refine")
            n_data, n_aff, n_mask = _working_grid(
                np.asarray(static.dataobj, dtype=np.float64), static.affine.astype(np.float64),
                preset.refine_voxel_mm, static_mask)
            n_data, n_aff, n_mask = _crop_to_foreground(n_data, n_aff, preset.crop_margin_mm,
                                                        n_mask)
            fine_metric = metric
            if preset.refine_sampling_proportion is not None:
                fine_metric = MutualInformationMetric(
                    nbins=preset.nbins, sampling_proportion=preset.refine_sampling_proportion)
            fine = AffineRegistration(metric=fine_metric, level_iters=[preset.refine_iters],
                                      sigmas=[0.0], factors=[1], options={"gtol": preset.gtol},
                                      verbosity=0)
            fine_masks = {"static_mask": n_mask, "moving_mask": moving_mask} \
                if masks and preset.refine_sampling_proportion in (None, 1.0) else {}
            result = fine.optimize(n_data, np.asarray(moving.dataobj, dtype=np.float64),
                                   RigidTransform3D(), None, static_grid2world=shift @ n_aff,
                                   moving_grid2world=shift @ moving.affine.astype(np.float64),
                                   starting_affine=current, **fine_masks)
            current = result.affine
            timings["refine"] = time.perf_counter() - t0
    finally:
        np.random.set_state(state)
    world = np.linalg.inv(shift) @ current @ shift
    return Registration(affine=world, transform=transform, settings=preset.name,
                        seconds=time.perf_counter() - started,
                        static_shape=tuple(int(n) for n in static.shape[:3]),
                        static_affine=static.affine.copy(),
                        static_header=nib.Nifti1Header.from_header(static.header),
                        stage_seconds=timings,
                        cpu_seconds=time.process_time() - cpu_started)


def with_settings(base: str | RegistrationSettings, **changes: object) -> RegistrationSettings:
    """A variant of a preset (for experiments and the benchmark's settings search)."""
    return replace(get_settings(base), **changes)
