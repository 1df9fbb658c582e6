"""The susceptibility displacement of an EPI image, along its phase-encoding axis only (DIPY SyN).

Why this way: off-resonance moves an EPI's signal along the phase-encoding (PE) axis and
nowhere else, by (field in Hz) x TotalReadoutTime voxels (Jezzard and Balaban 1995). Given
an undistorted image of the same contrast on the same grid (a b=0 synthesized from the
T1w, or a true one), the displacement is what registers the distorted image to it. DIPY's
`SymmetricDiffeomorphicRegistration` with its local cross-correlation metric finds a smooth
invertible map; every update step of the metric is projected onto the PE axis (the other
components zeroed) and composition and inversion of fields along one axis stay along it, so
the map it returns moves voxels along PE only. The images are registered on their own voxel
grid with a diagonal affine (voxel sizes only), so that the PE axis is a world axis there.

Why DIPY and not ANTs: measured on the head + EPI cohort's sub-001 with the true undistorted
b=0 as the reference (docs/registration.md, "Which engine"), ANTs `SyNOnly` with
cross-correlation (radius 2, `restrict_transformation` on the PE axis) was slightly more
accurate (0.086 against 0.094 mm mean error) but took 121 CPU seconds against 19: only
DIPY's fits the 60-second budget of one subject's estimation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.normalize import foreground_mask

AXES = "ijk"


@dataclass(frozen=True)
class FieldSettings:
    """DIPY SyN's recipe for the PE displacement (see docs/registration.md for how it was chosen).

    `level_iters`: iterations per pyramid level, coarsest first. `sigma_diff_mm`: Gaussian
    smoothing (sigma, mm at the finest level; DIPY's regulariser, which counts it in voxels
    of each level) of every update step: in mm so that a coarser EPI grid is regularised
    alike (10.5 mm: the 6 voxels measured best on IXI's 1.75 mm grid). `radius`:
    half-width (voxels) of the cross-correlation window. `step_length`: largest update
    per iteration (voxels). `smooth_mm`: a last Gaussian smoothing (sigma, mm) of
    the displacement, which keeps it invertible (a smoothed monotone map stays monotone).
    `mask_dilate_mm`: the images are registered inside their joint foreground grown by
    this much (outside it, both are set to zero), so that what a model invents in the
    background does not pull the field. `demean`: remove the displacement's mean inside the
    brain, leaving the translation along PE to the rigid registration (a constant
    displacement and a translation look the same). Off: the rigid registration to a
    distorted b=0 absorbs part of the distortion, so the field's mean is not zero even with
    a perfect reference (on the test phantom, demeaning raised the error from 0.33 to
    0.51 mm); it helps only against a model whose images sit off by a constant.
    `match_resolution`: before registering, the sharper of the two images is smoothed until
    it correlates best with the other (`match_blur`). Cross-correlation explains a
    difference in blur by compressing and stretching around every edge: a true b=0
    smoothed by 0.7 voxel against itself gave 0.26 mm of spurious displacement on average,
    0.01 mm once matched; a synthesized image is rarely exactly as sharp as the acquired one.
    """

    level_iters: tuple[int, ...] = (50, 25, 10)
    sigma_diff_mm: float = 10.5
    radius: int = 2
    step_length: float = 0.25
    smooth_mm: float = 6.0
    mask_dilate_mm: float | None = None
    demean: bool = False
    match_resolution: bool = True

    def describe(self) -> dict[str, object]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


DEFAULT_FIELD_SETTINGS = FieldSettings()


@dataclass
class Displacement:
    """The estimated displacement: where each voxel of the undistorted grid was read from.

    `mm[x]` is the signed distance (mm) along the PE axis's increasing index from voxel x
    of the undistorted image to where its signal lies in the distorted one, on the
    distorted image's own grid: corrected(x) = distorted(x + voxels(x) e_pe) x jacobian(x).
    """

    mm: np.ndarray
    pe_axis: int
    zooms: np.ndarray
    cpu_seconds: float = 0.0
    seconds: float = 0.0
    settings: dict[str, object] = field(default_factory=dict)

    @property
    def voxels(self) -> np.ndarray:
        return self.mm / float(self.zooms[self.pe_axis])

    def jacobian(self) -> np.ndarray:
        """1 + d(shift)/d(index) along PE: the intensity correction (signal conservation)."""
        return 1.0 + np.gradient(self.voxels, axis=self.pe_axis)

    def hz(self, total_readout_time: float, pe_sign: int) -> np.ndarray:
        """The off-resonance field (Hz) that makes this displacement: shift = sign x Hz x TRT."""
        return pe_sign * self.voxels / total_readout_time


def _scaled(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Intensities over their 99th percentile inside `mask`, zero outside it."""
    values = data[mask & (data > 0)]
    top = float(np.percentile(values, 99)) if values.size else 1.0
    return np.where(mask, data / max(top, 1e-12), 0.0).astype(np.float64)


def _correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    x = a[mask] - a[mask].mean()
    y = b[mask] - b[mask].mean()
    return float((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-12))


def _best_blur(sharp: np.ndarray, other: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """The Gaussian sigma (voxels, 0-3) that makes `sharp` correlate best with `other`, and
    that correlation."""
    from scipy.optimize import minimize_scalar

    found = minimize_scalar(
        lambda s: -_correlation(ndimage.gaussian_filter(sharp, s), other, mask),
        bounds=(0.0, 3.0), method="bounded", options={"xatol": 0.02})
    return float(found.x), -float(found.fun)


def match_blur(a: np.ndarray, b: np.ndarray, mask: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, float, float]:
    """`a` and `b` brought to the same resolution: whichever correlates better with the other
    once smoothed is smoothed (Gaussian, sigma in voxels, found by a bounded search); the
    sigmas used for `a` and `b` (one of them 0)."""
    sigma_a, corr_a = _best_blur(a, b, mask)
    sigma_b, corr_b = _best_blur(b, a, mask)
    if corr_a >= corr_b:
        return ndimage.gaussian_filter(a, sigma_a), b, sigma_a, 0.0
    return a, ndimage.gaussian_filter(b, sigma_b), 0.0, sigma_b


def _metric(pe_axis: int, settings: FieldSettings, zooms: np.ndarray) -> object:
    """DIPY's CC metric whose forward and backward steps keep only the PE component."""
    from dipy.align.metrics import CCMetric

    class AxisCC(CCMetric):
        def compute_forward(self) -> np.ndarray:
            return _along(super().compute_forward(), pe_axis)

        def compute_backward(self) -> np.ndarray:
            return _along(super().compute_backward(), pe_axis)

    sigma = settings.sigma_diff_mm / float(zooms[pe_axis])
    return AxisCC(3, sigma_diff=sigma, radius=settings.radius)


def _along(step: np.ndarray, axis: int) -> np.ndarray:
    step = np.array(step)
    step[..., [a for a in range(3) if a != axis]] = 0.0
    return step


def _joint_mask(distorted: np.ndarray, reference: np.ndarray, zooms: np.ndarray,
                dilate_mm: float | None) -> np.ndarray:
    if dilate_mm is None:
        return np.ones(distorted.shape, bool)
    joint = foreground_mask(distorted) | foreground_mask(reference)
    radius = np.maximum(np.round(dilate_mm / zooms), 0).astype(int)
    structure = np.ones(tuple(2 * r + 1 for r in radius), bool)
    return ndimage.binary_dilation(joint, structure)


def _levels(settings: FieldSettings, shape: tuple[int, ...]) -> list[int]:
    """The pyramid's iterations, without the coarsest levels a small image cannot have (DIPY's
    CC needs every axis of every level longer than its window)."""
    iters = list(settings.level_iters)
    while len(iters) > 1 and min(shape) // 2 ** (len(iters) - 1) <= 2 * settings.radius + 1:
        iters.pop(0)
    return iters


def estimate_displacement(distorted: np.ndarray, reference: np.ndarray, zooms: np.ndarray,
                          pe_axis: int, *, settings: FieldSettings = DEFAULT_FIELD_SETTINGS,
                          brain: np.ndarray | None = None,
                          progress: Callable[[str], None] | None = None) -> Displacement:
    """Register `distorted` to `reference` (same grid, same contrast) along `pe_axis` only.

    Both are 3D arrays on one voxel grid of `zooms` mm; `reference` is undistorted. The
    result is on that grid (the undistorted image's positions). `brain` (a mask on the
    grid; default: the reference's foreground) is where `settings.demean` takes the mean.
    """
    from dipy.align.imwarp import SymmetricDiffeomorphicRegistration

    if distorted.shape != reference.shape or distorted.ndim != 3:
        raise ValueError(f"two 3D arrays of one shape are needed, not {distorted.shape} and "
                         f"{reference.shape}")
    started, cpu = time.perf_counter(), time.process_time()
    zooms = np.asarray(zooms, float)
    mask = _joint_mask(distorted, reference, zooms, settings.mask_dilate_mm)
    matched: dict[str, list[float]] = {}
    if settings.match_resolution:
        inside = foreground_mask(reference) if brain is None else np.asarray(brain, bool)
        distorted, reference, sd, sr = match_blur(distorted.astype(np.float32),
                                                  reference.astype(np.float32), inside)
        matched = {"acquired_blur_vox": round(sd, 3), "reference_blur_vox": round(sr, 3)}
    grid = np.diag([*zooms, 1.0])
    syn = SymmetricDiffeomorphicRegistration(
        _metric(pe_axis, settings, zooms), level_iters=_levels(settings, distorted.shape),
        step_length=settings.step_length)
    if progress is not None:
        progress(f"SyN along {AXES[pe_axis]} ({len(settings.level_iters)} levels)")
    logger = logging.getLogger("dipy")
    level = logger.level
    logger.setLevel(logging.WARNING)  # DIPY logs every level at INFO
    try:
        mapping = syn.optimize(_scaled(reference, mask), _scaled(distorted, mask),
                               static_grid2world=grid, moving_grid2world=grid)
    finally:
        logger.setLevel(level)
    mm = np.asarray(mapping.get_forward_field(), np.float64)[..., pe_axis]
    if settings.smooth_mm > 0:
        mm = ndimage.gaussian_filter(mm, settings.smooth_mm / zooms, mode="nearest")
    if settings.demean:
        inside = foreground_mask(reference) if brain is None else np.asarray(brain, bool)
        mm = mm - float(mm[inside].mean()) if inside.any() else mm
    return Displacement(mm.astype(np.float32), pe_axis, zooms,
                        cpu_seconds=time.process_time() - cpu,
                        seconds=time.perf_counter() - started,
                        settings={**settings.describe(), **matched})
