"""Rigid/affine registration of two volumes with DIPY's mutual-information pipeline.

Why a module of our own around DIPY: the study's settings (`SETTINGS["study"]`)
are slow (tens of seconds per pair), and the product needs a fast default
(`SETTINGS["fast"]`) whose answer stays within 0.1 mm / 0.002 rad of the study's.
The fast preset gets its speed from registering at a coarser working resolution
(anti-aliased), from optimising rotations about the brain's centre instead of the
world origin (better conditioned), from fewer pyramid levels that stop as soon as
the metric stops improving, and from a short native-resolution refinement that
samples an eighth of the static voxels near the brain; see docs/registration.md
for the measurements.

Convention (DIPY's `AffineMap.affine`): `Registration.affine` maps a point of
the STATIC image's world (RAS+ mm) space to the corresponding point of the MOVING
image's world space. Resampling the moving image onto the static grid therefore
reads the moving image at `affine @ static_voxel_to_world`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import nibabel as nib
import numpy as np
from dipy.align.imaffine import AffineRegistration, MutualInformationMetric
from dipy.align.transforms import (
    AffineTransform3D,
    RigidTransform3D,
    TranslationTransform3D,
)
from dipy.core.optimize import Optimizer
from scipy import ndimage

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like
from mri2mri.runtime.imaging.normalize import foreground_mask

from .grids import Grid, within, world_box
from .masks import check_mask

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
    static points it visits. `refine_region_mm` (None = the whole cropped box) keeps
    only the samples within that distance of the static foreground, when no static
    mask is given: the far background's samples cost time and say nothing about
    alignment. `working_ftol` (None = scipy's default, about 2e-9) is L-BFGS-B's
    relative-improvement tolerance in the working-grid stages: they only have to
    bring the refinement close, so they stop early. `refine_moving_at_static_resolution`
    has the refinement read a moving image finer than the static one at the static's
    finest voxel size (anti-aliased; the working grid is made from it too): a 1 mm T1w
    against a 1.75 x 1.75 x 2.35 mm b=0 then costs a fifth of the voxels to prepare,
    and the static samples see no detail that the coarser grid lacks. Masks are honoured everywhere,
    sampled stages included (`SampledMutualInformation`).
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
    refine_region_mm: float | None = None
    working_ftol: float | None = None
    refine_moving_at_static_resolution: bool = False

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
        refine_sampling_proportion=0.125,
        refine_region_mm=6.0,
        working_ftol=1e-5,
        refine_moving_at_static_resolution=True,
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
    return world_box(foreground_mask(np.asarray(img.dataobj, dtype=np.float32)), img.affine)


def check_overlap(moving: nib.spatialimages.SpatialImage,
                  static: nib.spatialimages.SpatialImage,
                  moving_name: str = "moving image", static_name: str = "static image") -> float:
    """Raise `InputError` unless the two foregrounds' world boxes overlap; return the overlap.

    The overlap is the intersection volume over the smaller box's volume. Two scans
    of one session overlap almost entirely; no overlap at all means a broken header
    or the wrong file, and the registration would only chase a centre-of-mass guess.
    """
    return boxes_overlap(foreground_bounds(moving), foreground_bounds(static), moving_name,
                         static_name)


def boxes_overlap(moving_box: tuple[np.ndarray, np.ndarray],
                  static_box: tuple[np.ndarray, np.ndarray],
                  moving_name: str = "moving image", static_name: str = "static image") -> float:
    """`check_overlap` on foreground boxes already known (world (lo, hi) corners)."""
    (mlo, mhi), (slo, shi) = moving_box, static_box
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


def _translate(v: np.ndarray) -> np.ndarray:
    t = np.eye(4)
    t[:3, 3] = v
    return t


class SampledMutualInformation(MutualInformationMetric):
    """DIPY's mutual information whose sparse sampling honours masks (DIPY drops them there).

    DIPY's samples (a regular grid with jitter) outside the static mask are dropped, and
    so are those that the transform at the start of the pass maps outside the moving
    mask. Freezing that second test at the start is exact enough for a refinement, which
    moves points by a fraction of a voxel. The histogram's intensity range is taken
    inside the masks, as DIPY does for dense sampling.
    """

    def setup(self, transform, static, moving, *, static_grid2world=None,  # noqa: ANN001, ANN201
              moving_grid2world=None, starting_affine=None, static_mask=None,
              moving_mask=None):
        if self.sampling_proportion in (None, 1.0):
            return super().setup(transform, static, moving, static_grid2world=static_grid2world,
                                 moving_grid2world=moving_grid2world,
                                 starting_affine=starting_affine, static_mask=static_mask,
                                 moving_mask=moving_mask)
        super().setup(transform, static, moving, static_grid2world=static_grid2world,
                      moving_grid2world=moving_grid2world, starting_affine=starting_affine)
        if static_mask is None and moving_mask is None:
            return None
        keep = np.ones(self.ns, bool)
        if static_mask is not None:
            keep &= _inside(static_mask, self.static_world2grid, self.samples)
        if moving_mask is not None:
            start = np.eye(4) if starting_affine is None else starting_affine
            keep &= _inside(moving_mask, self.moving_world2grid @ start, self.samples)
        if keep.any():
            self.samples, self.static_vals = self.samples[keep], self.static_vals[keep]
            self.samples_prealigned = self.samples_prealigned[keep]
            self.ns = int(keep.sum())
        self.histogram.setup(self.static, self.moving, smask=_int32(static_mask),
                             mmask=_int32(moving_mask))
        return None


def _int32(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else np.asarray(mask).astype(np.int32)  # DIPY's mask dtype


def _inside(mask: np.ndarray, world2grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each homogeneous world point (N x 4) falls in a voxel of `mask` (nearest)."""
    ijk = np.rint(points @ world2grid.T)[:, :3].astype(int)
    ok = np.all((ijk >= 0) & (ijk < np.array(mask.shape[:3])), axis=1)
    out = np.zeros(len(points), bool)
    out[ok] = mask[tuple(ijk[ok].T)] > 0
    return out


class _Clock:
    """Wall time of each named stage (and the progress callback as each starts)."""

    def __init__(self, progress: Callable[[str], None] | None) -> None:
        self.progress, self.seconds = progress, {}
        self.started, self.cpu_started = time.perf_counter(), time.process_time()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.progress is not None:
            self.progress(name)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - t0


@contextmanager
def _seeded_global_rng(seed: int) -> Iterator[None]:
    """DIPY jitters sparse samples with numpy's global generator: keep runs repeatable."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _stages(preset: RegistrationSettings, transform: str) -> list[tuple[str, object]]:
    stages: list[tuple[str, object]] = []
    if preset.translation_stage:
        stages.append(("translation", TranslationTransform3D()))
    stages.append(("rigid", RigidTransform3D()))
    if transform == "affine":
        stages.append(("affine", AffineTransform3D()))
    return stages


def _optimize(reg: AffineRegistration, static: Grid, moving: Grid, tf: object, *,
              start: np.ndarray, options: dict[str, float]) -> np.ndarray:
    """One DIPY stage from `start`; the static->moving affine it ends at.

    A moving mask is handed to DIPY as the static voxels that `start` maps into it
    (with the static mask, if any): DIPY's own moving mask is re-tested at every
    evaluation, so the set of voxels counted jumps as the transform changes, and the
    metric with it (measured in docs/registration.md, "Masks").
    """
    reg.options = dict(options)  # DIPY writes maxfun into it
    result = reg.optimize(static.data, moving.data, tf, None, static_grid2world=static.affine,
                          moving_grid2world=moving.affine, starting_affine=start,
                          static_mask=_int32(_static_region(static, moving, start)))
    return result.affine


def _static_region(static: Grid, moving: Grid, start: np.ndarray) -> np.ndarray | None:
    """The static mask, less the static voxels that `start` maps outside the moving mask."""
    if moving.mask is None:
        return static.mask
    vox = np.linalg.inv(moving.affine) @ start @ static.affine
    seen = ndimage.affine_transform(moving.mask.astype(np.uint8), vox[:3, :3], vox[:3, 3],
                                    output_shape=static.data.shape, order=0, mode="constant") > 0
    region = seen if static.mask is None else seen & static.mask
    return region if region.any() else static.mask


def _options(preset: RegistrationSettings, working: bool) -> dict[str, float]:
    """L-BFGS-B's options: `working_ftol` stops the working-grid stages earlier."""
    if working and preset.working_ftol is not None:
        return {"gtol": preset.gtol, "ftol": preset.working_ftol}
    return {"gtol": preset.gtol}


def _refine(preset: RegistrationSettings, static: Grid, moving: Grid,
            start: np.ndarray) -> np.ndarray:
    """The last rigid pass on the native (cropped) grids, sampled (see the settings).

    Driven directly (metric + L-BFGS-B, as DIPY's single-level `optimize` does) rather than
    through `AffineRegistration`: its scale spaces would rescale and recast the whole
    moving crop (twice, for one level without smoothing) and resample the static image
    onto itself, which on a 1 mm T1w cost as much as the pass's metric evaluations.
    Mutual information does not depend on the intensity scale, so the rescaling changes
    nothing but rounding.
    """
    metric = SampledMutualInformation(nbins=preset.nbins,
                                      sampling_proportion=preset.refine_sampling_proportion)
    rigid = RigidTransform3D()
    metric.setup(rigid, static.data, moving.data, static_grid2world=static.affine,
                 moving_grid2world=moving.affine, starting_affine=start,
                 static_mask=_int32(_static_region(static, moving, start)))
    options = {**_options(preset, False), "maxfun": preset.refine_iters}  # DIPY's cap
    found = Optimizer(metric.distance_and_gradient, rigid.get_identity_parameters(),
                      method="L-BFGS-B", jac=True, options=options)
    return rigid.param_to_matrix(found.xopt) @ start


#: Margin (mm) around the moving region the refinement can reach from its start: the
#: refinement moves the head by a fraction of a millimetre, so nothing it samples lies
#: outside; without the crop DIPY prepares (gradients, casts) the whole moving volume,
#: 9 M voxels for a 1 mm T1w, which was half the refinement's time.
REFINE_MOVING_MARGIN_MM = 10.0


def _refine_grids(preset: RegistrationSettings, static: Grid, moving: Grid, *,
                  box: tuple[np.ndarray, np.ndarray] | None, shift: np.ndarray,
                  static_fg: np.ndarray, start: np.ndarray) -> tuple[Grid, Grid]:
    """Native static grid (optionally coarsened), cropped, its sampling region as its mask;
    the native moving grid cropped to where `start` maps that static grid."""
    region = static.mask is None and preset.refine_region_mm is not None
    if region:
        static = replace(static, mask=static_fg)
    static = static.coarsened(preset.refine_voxel_mm).cropped(box, preset.crop_margin_mm or 0.0)
    if region:  # grown on the cropped grid: fewer voxels to dilate
        static = replace(static, mask=within(static.mask, static.affine, preset.refine_region_mm))
    static, moving = static.moved(shift), moving.moved(shift)
    return static, moving.cropped(_reached_box(static, start), REFINE_MOVING_MARGIN_MM)


def _reached_box(static: Grid, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World box (lo, hi) of the moving space that `start` maps the static grid's corners to."""
    last = np.array(static.data.shape[:3], float) - 1.0
    corners = np.array([[x, y, z] for x in (0.0, last[0]) for y in (0.0, last[1])
                        for z in (0.0, last[2])])
    world = nib.affines.apply_affine(start @ static.affine, corners)
    return world.min(axis=0), world.max(axis=0)


def register_images(moving: nib.spatialimages.SpatialImage,
                    static: nib.spatialimages.SpatialImage, *,
                    transform: str = "rigid",
                    settings: str | RegistrationSettings = "fast",
                    moving_mask: np.ndarray | None = None,
                    static_mask: np.ndarray | None = None,
                    progress: Callable[[str], None] | None = None) -> Registration:
    """Register `moving` to `static` with mutual information; return the static->moving map.

    Stages: centre of mass -> translation -> rigid (-> 12-parameter affine when
    `transform="affine"`) [-> the fast preset's native refinement]. Masks (on each
    image's own grid, nonzero = inside; `InputError` when off the grid or empty)
    restrict the metric to those voxels in every stage, and the centres of mass to
    the masked voxels. `progress`, when given, is called with each stage's name.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    preset = get_settings(settings)
    if moving_mask is not None:
        moving_mask = check_mask(moving_mask, moving, "moving mask")
    if static_mask is not None:
        static_mask = check_mask(static_mask, static, "static mask")
    clock = _Clock(progress)  # the overlap check counts: it is part of a registration's cost
    with clock.stage("prepare"):
        native_s, native_m = Grid.of(static, static_mask), Grid.of(moving, moving_mask)
        static_fg = foreground_mask(native_s.data)
        if preset.refine_moving_at_static_resolution and preset.refine_iters > 0:
            native_m = native_m.coarsened(float(native_s.zooms.min()))
        work_m = native_m.coarsened(preset.working_voxel_mm)
        # The moving foreground's box from the working grid: the same box for the overlap
        # check at a fraction of the cost on a 1 mm image.
        boxes_overlap(world_box(foreground_mask(work_m.data), work_m.affine),
                      world_box(static_fg, static.affine))
        box = None if preset.crop_margin_mm is None else world_box(static_fg, static.affine)
        margin = preset.crop_margin_mm or 0.0
        work_s = native_s.coarsened(preset.working_voxel_mm).cropped(box, margin)
        # Optimise in a frame centred on the static foreground: rotations then pivot about
        # the brain, so the parameters are decoupled. The frame shift is undone at the end.
        shift = _translate(-replace(native_s, mask=static_fg).centre_of_mass()) \
            if preset.centre_frame else np.eye(4)
        work_s, work_m = work_s.moved(shift), work_m.moved(shift)
    with clock.stage("centre of mass"):
        current = _translate(work_m.centre_of_mass() - work_s.centre_of_mass())
    metric = SampledMutualInformation(nbins=preset.nbins,
                                      sampling_proportion=preset.sampling_proportion)
    reg = AffineRegistration(metric=metric, level_iters=list(preset.level_iters),
                             sigmas=list(preset.sigmas), factors=list(preset.factors),
                             verbosity=0)
    with _seeded_global_rng(0):
        for name, tf in _stages(preset, transform):
            with clock.stage(name):
                current = _optimize(reg, work_s, work_m, tf, start=current,
                                    options=_options(preset, True))
        if preset.refine_iters > 0 and preset.working_voxel_mm is not None:
            with clock.stage("refine"):
                fine_s, fine_m = _refine_grids(preset, native_s, native_m, box=box, shift=shift,
                                               static_fg=static_fg, start=current)
                current = _refine(preset, fine_s, fine_m, current)
    return Registration(affine=np.linalg.inv(shift) @ current @ shift, transform=transform,
                        settings=preset.name, seconds=time.perf_counter() - clock.started,
                        static_shape=tuple(int(n) for n in static.shape[:3]),
                        static_affine=static.affine.copy(),
                        static_header=nib.Nifti1Header.from_header(static.header),
                        stage_seconds=clock.seconds,
                        cpu_seconds=time.process_time() - clock.cpu_started)


def with_settings(base: str | RegistrationSettings, **changes: object) -> RegistrationSettings:
    """A variant of a preset (for experiments and the benchmark's settings search)."""
    return replace(get_settings(base), **changes)
