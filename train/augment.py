"""Training-time augmentation and contrast randomisation of 2.5D slice items (numpy only).

Why: a model trained on one scanner learns that scanner's intensity profile and
fails on another (see docs/training.md, "Generalisation"). Augmentation shows it
plausible variations of geometry and acquisition; contrast randomisation goes
further and remaps each source's tissue intensities with a random monotone curve,
so the network has to use the contrast *ordering* and the anatomy, not the exact
grey levels of the training site (the idea of SynthSR/SynthSeg, restricted to the
source's own contrast family).

The hook the data loader calls, in its worker processes::

    source, target = transform(source, target, rng)

`source` is float32 (S, 2K+1, H, W): S sources, each with its 2K+1 context slices;
`target` is float32 (1, H, W); `rng = np.random.default_rng([seed, epoch, position])`,
so an item's augmentation depends only on where it sits in the epoch and a resumed
run repeats it exactly. Geometric transforms (flip, rotation, scale, translation)
apply identically to every channel and to the target. Intensity transforms apply
per source, identically across that source's context slices, never to the target.
They work on the magnitude m = (x + 1) / 2 of the normalised slices (background 0,
the foreground's 99.5th percentile 1) and keep the background at 0 except for noise.

Library choice: scipy.ndimage (already a dependency of the runtime) does every
resampling here in a few lines. TorchIO is built around 3D SimpleITK images and
MONAI's randomised transforms draw from `np.random.RandomState` objects of their own
and would add a large dependency for five 2D operations; neither knows the
"per source, identical across its context slices" grouping that 2.5D input needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from scipy import ndimage

from mri2mri.runtime.imaging.slicing import PAD_VALUE

#: The data loader's hook (`mri2mri.train.dataset.CachedSlices`):
#: ``source, target = transform(source, target, rng)``, source (S, 2K+1, H, W) float32,
#: target (1, H, W) float32, rng a `numpy.random.Generator`.
Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator],
                     tuple[np.ndarray, np.ndarray]]

#: Interior knots of the random intensity curves (contrast jitter and randomisation).
KNOTS = 5
#: Coarse lattice of the random bias field (nodes per side before cubic upsampling).
BIAS_NODES = 4


@dataclass(frozen=True)
class AugmentSpec:
    """Each transform's strength; 0 switches it off. Written as ``--augment`` text."""

    flip: float = 0.0  # probability of a left-right flip
    rotate: float = 0.0  # largest in-plane rotation, degrees (uniform in +-)
    scale: float = 0.0  # largest relative zoom (uniform in 1 +- scale)
    translate: float = 0.0  # largest shift, fraction of the slice size per axis
    gamma: float = 0.0  # largest |log gamma| of m -> m ** gamma
    contrast: float = 0.0  # jitter of a monotone intensity curve, fraction of knot spacing
    bias: float = 0.0  # largest peak of a smooth log gain field
    noise: float = 0.0  # largest Rician noise sigma (m units: foreground ~ 1)
    lowres: float = 0.0  # largest down-sampling factor of the simulated low resolution (> 1)
    randomize: float = 0.0  # probability per source of a random monotone contrast remapping

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not np.isfinite(value) or value < 0:
                raise ValueError(f"augment: {f.name} must be a number >= 0 (got {value})")
        for name in ("flip", "randomize"):
            if getattr(self, name) > 1:
                raise ValueError(f"augment: {name} is a probability (0-1)")
        if self.scale >= 1 or self.translate >= 0.5 or self.rotate > 180:
            raise ValueError("augment: scale must be < 1, translate < 0.5, rotate <= 180")
        if self.lowres and self.lowres < 1:
            raise ValueError("augment: lowres is a down-sampling factor (> 1, or 0 for off)")

    @property
    def active(self) -> bool:
        return any(asdict(self).values())

    @classmethod
    def parse(cls, text: str) -> AugmentSpec:
        """``none``, ``light``, ``strong``, optionally followed by ``,name=value`` overrides."""
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise ValueError("augment: empty specification (use none, light or strong)")
        spec = cls()
        if "=" not in items[0]:
            if items[0] not in PRESETS:
                raise ValueError(f"augment: unknown preset {items[0]!r}; use "
                                 f"{', '.join(PRESETS)} (then name=value overrides)")
            spec = PRESETS[items.pop(0)]
        known = {f.name for f in fields(cls)}
        overrides: dict[str, float] = {}
        for item in items:
            name, _, value = item.partition("=")
            if name not in known:
                raise ValueError(f"augment: unknown option {name!r}; use "
                                 f"{', '.join(sorted(known))}")
            try:
                overrides[name] = float(value)
            except ValueError:
                raise ValueError(f"augment: {item!r}: {value!r} is not a number") from None
        return replace(spec, **overrides)

    def to_string(self) -> str:
        """Canonical text (``none`` or every non-zero option); `parse` reads it back."""
        if not self.active:
            return "none"
        return ",".join(f"{k}={v:g}" for k, v in asdict(self).items() if v)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS: dict[str, AugmentSpec] = {
    "none": AugmentSpec(),
    "light": AugmentSpec(flip=0.5, rotate=5, scale=0.05, translate=0.03, gamma=0.1,
                         contrast=0.1, bias=0.1, noise=0.02),
    "strong": AugmentSpec(flip=0.5, rotate=10, scale=0.1, translate=0.05, gamma=0.3,
                          contrast=0.3, bias=0.3, noise=0.05, lowres=2.0),
}


def build_transform(spec: AugmentSpec | str) -> Transform | None:
    """The item transform for a spec, or None when it does nothing (no work in the loader)."""
    if isinstance(spec, str):
        spec = AugmentSpec.parse(spec)
    if not spec.active:
        return None

    def transform(source: np.ndarray, target: np.ndarray, rng: np.random.Generator
                  ) -> tuple[np.ndarray, np.ndarray]:
        if source.ndim != 4 or target.ndim != 3 or source.shape[2:] != target.shape[1:]:
            raise ValueError(f"expected source (S, 2K+1, H, W) and target (1, H, W), got "
                             f"{source.shape} and {target.shape}")
        source, target = _geometric(spec, source, target, rng)
        source = np.stack([_intensity(spec, s, rng) for s in source])
        return source.astype(np.float32), target.astype(np.float32)

    return transform


# -- geometry -----------------------------------------------------------------------------

def _geometric(spec: AugmentSpec, source: np.ndarray, target: np.ndarray,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    flip = rng.random() < spec.flip
    angle = np.deg2rad(rng.uniform(-spec.rotate, spec.rotate))
    zoom = 1.0 + rng.uniform(-spec.scale, spec.scale)
    h, w = target.shape[1:]
    shift = rng.uniform(-spec.translate, spec.translate, 2) * (h, w)
    if flip:  # axis -2 of a slice is x, the left-right axis of the canonical RAS+ grid
        source, target = source[..., ::-1, :], target[..., ::-1, :]
    if not (spec.rotate or spec.scale or spec.translate):
        return np.ascontiguousarray(source), np.ascontiguousarray(target)
    # Output pixel p samples input at centre + M (p - centre) - shift: rotate and zoom about
    # the slice centre.
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) / zoom
    centre = (np.array([h, w]) - 1) / 2
    offset = centre - matrix @ centre - shift

    def warp(image: np.ndarray) -> np.ndarray:
        return ndimage.affine_transform(image, matrix, offset, order=1, mode="constant",
                                        cval=PAD_VALUE)

    flat = source.reshape(-1, h, w)
    warped = np.stack([warp(c) for c in flat]).reshape(source.shape)
    return warped, warp(target[0])[None]


# -- intensity (per source, identical across its context slices) -----------------------

def _intensity(spec: AugmentSpec, stack: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One source's (2K+1, H, W) context stack, in normalised units."""
    m = np.clip((stack.astype(np.float64) + 1.0) / 2.0, 0.0, None)
    if spec.randomize and rng.random() < spec.randomize:
        m = _remap(m, random_monotone_curve(rng))
    elif spec.contrast:
        m = _remap(m, jittered_curve(rng, spec.contrast))
    if spec.gamma:
        m = m ** np.exp(rng.uniform(-spec.gamma, spec.gamma))
    if spec.bias:
        m = m * np.exp(_smooth_field(rng, m.shape[1:], rng.uniform(0, spec.bias)))
    if spec.lowres:
        factor = rng.uniform(1.0, spec.lowres)
        m = np.stack([_low_resolution(c, factor) for c in m])
    if spec.noise:
        sigma = rng.uniform(0, spec.noise)
        m = np.hypot(m + rng.normal(0, sigma, m.shape), rng.normal(0, sigma, m.shape))
    return 2.0 * m - 1.0


def random_monotone_curve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Knots (x, y) of a random increasing curve with 0 -> 0 and 1 -> 1.

    Interior values are sorted uniform draws: any increasing reshaping of the tissue
    intensities is possible, so tissue contrasts may shrink, grow or change balance,
    while their order (the contrast family) stays.
    """
    x = np.linspace(0.0, 1.0, KNOTS + 2)
    y = np.concatenate([[0.0], np.sort(rng.uniform(0.0, 1.0, KNOTS)), [1.0]])
    return x, y


def jittered_curve(rng: np.random.Generator, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """Knots of an increasing curve near the identity (each knot moved by +-strength spacing)."""
    x = np.linspace(0.0, 1.0, KNOTS + 2)
    step = x[1]
    y = x + np.concatenate([[0.0], rng.uniform(-strength, strength, KNOTS) * step, [0.0]])
    return x, np.maximum.accumulate(np.clip(y, 0.0, 1.0))


def _remap(m: np.ndarray, knots: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Piecewise-linear intensity map; above 1 it continues with the last segment's slope."""
    x, y = knots
    out = np.interp(m, x, y)
    slope = (y[-1] - y[-2]) / (x[-1] - x[-2])
    return np.where(m > 1.0, y[-1] + (m - 1.0) * slope, out)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], peak: float
                  ) -> np.ndarray:
    """A smooth random field over the slice with max |value| = peak."""
    coarse = rng.standard_normal((BIAS_NODES, BIAS_NODES))
    field = ndimage.zoom(coarse, (shape[0] / BIAS_NODES, shape[1] / BIAS_NODES), order=3,
                         mode="nearest", grid_mode=True)[:shape[0], :shape[1]]
    return field * (peak / max(float(np.abs(field).max()), 1e-12))


def _low_resolution(image: np.ndarray, factor: float) -> np.ndarray:
    """Blur (anti-aliasing), sample on a grid `factor` times coarser, interpolate back."""
    if factor < 1.05:
        return image
    h, w = image.shape
    blurred = ndimage.gaussian_filter(image, 0.5 * np.sqrt(factor ** 2 - 1), mode="nearest")
    small = (max(2, round(h / factor)), max(2, round(w / factor)))
    grid = np.meshgrid(np.linspace(0, h - 1, small[0]), np.linspace(0, w - 1, small[1]),
                       indexing="ij")
    coarse = ndimage.map_coordinates(blurred, grid, order=1, mode="nearest")
    back = np.meshgrid(np.linspace(0, small[0] - 1, h), np.linspace(0, small[1] - 1, w),
                       indexing="ij")
    return ndimage.map_coordinates(coarse, back, order=1, mode="nearest")
