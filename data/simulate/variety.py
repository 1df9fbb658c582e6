"""Per-subject variety of the simulator: a random scanner, lesions and skull stripping.

Why: a starter model is trained on simulated subjects only and must work on scanners
it never saw. The default demo cohort images every subject with the IXI protocols and
a healthy template brain; here each subject can get its own simulated scanner (sequence
timings, grey/white-matter contrast, SNR, bias field, acquired resolution drawn from
ranges that bracket clinical 1.5 T and 3 T protocols), its own lesions
(`mri2mri.data.simulate.lesions`), and a skull stripping with an imperfect edge and a
zero background, as in the BraTS-style preprocessed scans users bring (the DWI of a
stripped subject too, by the same mask: `strip_image`). This is domain
randomisation in the physics (the idea of SynthSR/SynthSeg), so every contrast of a
subject stays a physically consistent picture of the same tissue.

Written as ``NAME=VALUE`` items (``mri2mri-data demo --variety``): ``scanners=1`` (the
probability of a random scanner), ``lesions=0.6`` (probability of lesions), ``max_lesions=3``,
``skull_strip=0.6`` (probability of stripping); or the preset ``starter``.
Every draw comes from the subject's own random stream, so a cohort without variety is
byte-for-byte what it was before this existed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from .lesions import Lesion, add_lesions, draw_lesions, lesion_tissues
from .shift import AcquisitionShift
from .tissue import Tissue

#: Ranges of the random scanner (uniform; GM/WM exponent and SNR log-uniform).
TIMINGS: dict[str, dict[str, tuple[float, float]]] = {
    "T1w": {"ti": (700.0, 1300.0), "flip": (6.0, 12.0), "shot_interval": (2000.0, 3500.0)},
    "T2w": {"tr": (3000.0, 9000.0), "te": (80.0, 120.0)},
    "PDw": {"tr": (2000.0, 8000.0), "te": (8.0, 30.0)},
    "dwi": {"te": (60.0, 110.0)},
}
GM_WM_EXPONENT = (0.6, 1.5)
SNR = (20.0, 80.0)
BIAS_PEAK = (0.05, 0.4)
BLUR_FWHM_MM = (0.0, 2.0)


@dataclass(frozen=True)
class Variety:
    """How much each subject departs from the default scanner and healthy template."""

    scanners: float = 0.0  # probability of a random scanner per subject
    lesions: float = 0.0  # probability that a subject has lesions
    max_lesions: int = 3
    skull_strip: float = 0.0  # probability that a subject is skull-stripped

    def __post_init__(self) -> None:
        for name in ("scanners", "lesions", "skull_strip"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"variety: {name} is a probability (0-1)")
        if self.max_lesions < 1:
            raise ValueError("variety: max_lesions must be at least 1")

    @property
    def active(self) -> bool:
        return bool(self.scanners or self.lesions or self.skull_strip)

    @classmethod
    def parse(cls, text: str) -> Variety:
        """``none``, ``starter``, then ``name=value`` overrides; ValueError on a bad item."""
        items = [t.strip() for t in text.split(",") if t.strip()]
        spec = cls()
        if items and "=" not in items[0]:
            if items[0] not in PRESETS:
                raise ValueError(f"variety: unknown preset {items[0]!r}; use "
                                 f"{', '.join(PRESETS)}")
            spec = PRESETS[items.pop(0)]
        known = {f.name: f.type for f in fields(cls)}
        changes: dict[str, float] = {}
        for item in items:
            name, _, value = item.partition("=")
            if name not in known:
                raise ValueError(f"variety: unknown option {name!r}; use {', '.join(known)}")
            try:
                changes[name] = int(value) if name == "max_lesions" else float(value)
            except ValueError:
                raise ValueError(f"variety: {item!r}: {value!r} is not a number") from None
        return replace(spec, **changes)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


PRESETS = {"none": Variety(),
           "starter": Variety(scanners=0.85, lesions=0.6, max_lesions=3, skull_strip=0.6)}


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]))))


def random_scanner(rng: np.random.Generator) -> AcquisitionShift:
    """A simulated scanner: every contrast's timings, contrast, SNR, bias and blur drawn."""
    protocol = {c: {k: round(float(rng.uniform(*b)), 3) for k, b in t.items()}
                for c, t in TIMINGS.items()}
    contrasts = tuple(TIMINGS)
    return AcquisitionShift(
        protocol=protocol,
        gm_wm_contrast={c: _log_uniform(rng, GM_WM_EXPONENT) for c in contrasts},
        snr={c: _log_uniform(rng, SNR) for c in contrasts},
        bias_peak={c: float(rng.uniform(*BIAS_PEAK)) for c in contrasts},
        blur_fwhm_mm={c: float(rng.uniform(*BLUR_FWHM_MM)) for c in contrasts})


def strip_mask(rng: np.random.Generator, brain: np.ndarray, voxel_mm: float) -> np.ndarray:
    """An imperfect brain mask from the brain's tissue fraction: a random smoothing and
    threshold move its edge inwards or outwards by a millimetre or two, as tools do."""
    sigma = float(rng.uniform(0.5, 2.0)) / voxel_mm
    threshold = float(rng.uniform(0.2, 0.7))
    mask = ndimage.gaussian_filter(brain.astype(np.float32), sigma) > threshold
    mask = ndimage.binary_fill_holes(mask)
    return mask


def strip_image(img: nib.Nifti1Image, mask: np.ndarray | None, affine: np.ndarray
                ) -> nib.Nifti1Image:
    """`img` (3D or 4D, e.g. the DWI on its own grid) zeroed outside the stripping `mask`
    (on the anatomical grid `affine`), carried onto img's grid by world coordinates: a
    stripped subject loses its head in every image. None: `img` as it is."""
    if mask is None:
        return img
    from mri2mri.runtime.imaging.resample import resample_to

    grid = nib.Nifti1Image(np.zeros(img.shape[:3], np.uint8), img.affine)
    inside = np.asarray(resample_to(nib.Nifti1Image(mask.astype(np.float32), affine),
                                    grid).dataobj) > 0.5
    data = np.asarray(img.dataobj)
    data = data * (inside if data.ndim == 3 else inside[..., None])
    return nib.Nifti1Image(data.astype(img.get_data_dtype()), img.affine, img.header)


class _WithLesions:
    """A subject's anatomy with lesions carved into it (same interface: fractions, params)."""

    def __init__(self, anatomy: Any, lesions: list[Lesion]) -> None:
        self._anatomy, self._lesions = anatomy, lesions
        self.params = anatomy.params

    def fractions(self, points: np.ndarray) -> dict[str, np.ndarray]:
        warped = self._anatomy.warp(points)
        return add_lesions(self._anatomy.fractions(points, warped), warped, self._lesions)


#: Tissues outside the brain (the head's): never inside a skull-stripping mask's estimate.
_OUTSIDE = {"bone", "muscle", "fat"}


@dataclass
class SubjectVariety:
    """One subject's draws: its scanner, lesions (and their tissues), whether stripped."""

    scanner: AcquisitionShift
    lesions: list[Lesion] = field(default_factory=list)
    lesion_tissues: dict[str, Tissue] = field(default_factory=dict)
    strip_rng: np.random.Generator | None = None
    random_scanner: bool = False

    @classmethod
    def draw(cls, variety: Variety | None, seed: list[int], template: Any,
             default: AcquisitionShift) -> SubjectVariety:
        """Draws from the subject's own stream `seed`; none at all without variety."""
        if variety is None or not variety.active:
            return cls(default)
        rng = np.random.default_rng(seed)
        out = cls(default)
        if rng.random() < variety.scanners:
            out.scanner, out.random_scanner = random_scanner(rng), True
        if rng.random() < variety.lesions:
            count = int(rng.integers(1, variety.max_lesions + 1))
            out.lesions = draw_lesions(rng, template.wm, template.affine, count)
            out.lesion_tissues = lesion_tissues(rng)
        if rng.random() < variety.skull_strip:
            out.strip_rng = np.random.default_rng(rng.integers(2**32))
        return out

    def tissues(self, tissues: dict[str, Tissue]) -> dict[str, Tissue]:
        return {**tissues, **self.lesion_tissues}

    def anatomy(self, anatomy: Any) -> Any:
        return _WithLesions(anatomy, self.lesions) if self.lesions else anatomy

    def strip_mask(self, fractions: dict[str, np.ndarray], shape: tuple[int, ...],
                   voxel_mm: float) -> np.ndarray | None:
        """The subject's skull-stripping mask on the anatomical grid, or None."""
        if self.strip_rng is None:
            return None
        brain = sum(f for name, f in fractions.items() if name not in _OUTSIDE)
        return strip_mask(self.strip_rng, np.reshape(brain, shape), voxel_mm)

    def params(self) -> dict[str, Any]:
        """What was drawn, for the dataset description (empty without variety)."""
        out: dict[str, Any] = {}
        if self.random_scanner:
            out["scanner"] = asdict(self.scanner)
        if self.lesions:
            out["lesions"] = [{"centre_mm": np.round(les.centre, 1).tolist(),
                               "radius_mm": round(les.radius_mm, 2),
                               "core_fraction": round(les.core_fraction, 3),
                               "oedema_factor": round(les.oedema_factor, 3)}
                              for les in self.lesions]
            out["lesion_tissues"] = {k: asdict(v) for k, v in self.lesion_tissues.items()}
        if self.strip_rng is not None:
            out["skull_stripped"] = True
        return out
