"""Brain lesions for the simulator: tumour, necrosis and oedema compartments as smooth blobs.

Why: real scans that a starter model meets often carry pathology (the four real pairs we
evaluate on all hold a glioma or metastases), and a network trained on healthy phantoms
renders oedema too dark and necrosis like CSF. Each lesion is a soft, irregular blob
placed in white matter of the template, with three nested compartments: a necrotic or
cystic core (long T1 and T2), solid tumour, and an oedema shell that spreads along white
matter more than grey. The compartments take their volume from the parenchyma (grey and
white matter) they sit in, never from CSF or outside the brain.

Relaxation values are ranges, drawn per subject, not literature constants: lesions vary
widely between patients and scanners. The ranges bracket 1.5 T reports of vasogenic
oedema (T1 ~1.0-1.5 s, T2 ~120-250 ms), solid glioma (T1 ~1.0-1.6 s, T2 ~90-160 ms) and
necrosis or cyst fluid (T1 ~1.8-3.5 s, T2 ~0.3-1.5 s), e.g. Just M, Thelen M, Radiology
1988;169:779-785; they are stated assumptions of the simulation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fields import LatticeField, random_field
from .tissue import Tissue

#: The lesion compartments, innermost first.
LESION_TISSUES = ("necrosis", "tumour", "oedema")
#: (low, high) of T1 (ms), T2 (ms), proton density, mean diffusivity (mm^2/s).
LESION_RANGES: dict[str, tuple[tuple[float, float], ...]] = {
    "necrosis": ((1800.0, 3500.0), (300.0, 1500.0), (0.90, 1.00), (1.8e-3, 2.8e-3)),
    "tumour": ((1000.0, 1600.0), (90.0, 160.0), (0.78, 0.90), (0.8e-3, 1.3e-3)),
    "oedema": ((1000.0, 1500.0), (120.0, 250.0), (0.80, 0.92), (1.2e-3, 1.8e-3)),
}
#: Width of a compartment's soft edge (mm).
EDGE_MM = 2.0


@dataclass(frozen=True)
class Lesion:
    """One lesion in template space: centre, tumour radius and its compartments' extents."""

    centre: np.ndarray  # template world, mm
    radius_mm: float  # solid tumour (with the core)
    core_fraction: float  # necrotic core radius / tumour radius (0: none)
    oedema_factor: float  # oedema radius / tumour radius (>= 1)
    shape: LatticeField  # smooth relative radius perturbation


def lesion_tissues(rng: np.random.Generator) -> dict[str, Tissue]:
    """One subject's lesion relaxation parameters, each uniform in its range."""
    return {name: Tissue(*(float(rng.uniform(lo, hi)) for lo, hi in LESION_RANGES[name]))
            for name in LESION_TISSUES}


def draw_lesions(rng: np.random.Generator, wm: np.ndarray, affine: np.ndarray,
                 count: int) -> list[Lesion]:
    """`count` lesions centred in the template's deep white matter (`wm` on `affine`)."""
    candidates = np.argwhere(wm > 0.8)
    lesions = []
    for _ in range(count):
        ijk = candidates[rng.integers(len(candidates))]
        centre = affine[:3, :3] @ ijk + affine[:3, 3]
        radius = float(rng.uniform(4.0, 20.0))
        core = float(rng.uniform(0.3, 0.75)) if rng.random() < 0.6 else 0.0
        oedema = float(rng.uniform(1.2, 2.6))
        reach = radius * oedema + 3 * EDGE_MM
        shape = random_field(rng, centre - reach, centre + reach, spacing=3.0, smoothness=6.0,
                             amplitude=0.3)
        lesions.append(Lesion(centre, radius, core, oedema, shape))
    return lesions


def _edge(distance: np.ndarray, radius: np.ndarray) -> np.ndarray:
    return np.clip((radius - distance) / EDGE_MM + 0.5, 0.0, 1.0)


def add_lesions(fractions: dict[str, np.ndarray], template_points: np.ndarray,
                lesions: list[Lesion]) -> dict[str, np.ndarray]:
    """Tissue fractions with the lesions' compartments carved out of the parenchyma.

    `template_points` (N, 3) are the voxels' positions in template space (where the
    lesions live, so they deform with the subject's anatomy).
    """
    gm, wm = fractions["gm"], fractions["wm"]
    parenchyma = gm + wm
    white = np.where(parenchyma > 0, (wm + 0.4 * gm) / np.maximum(parenchyma, 1e-6), 0.0)
    inner = {name: np.zeros_like(gm) for name in LESION_TISSUES}
    for lesion in lesions:
        distance = np.linalg.norm(template_points - lesion.centre, axis=1)
        near = distance < lesion.radius_mm * lesion.oedema_factor * 1.4 + 3 * EDGE_MM
        if not near.any():
            continue
        scale = 1.0 + lesion.shape(template_points[near])
        d, r = distance[near], lesion.radius_mm * scale
        core = _edge(d, r * lesion.core_fraction) if lesion.core_fraction else 0.0 * d
        solid = _edge(d, r)
        oedema = _edge(d, r * lesion.oedema_factor) * white[near]
        for name, value in (("necrosis", core), ("tumour", solid), ("oedema", oedema)):
            inner[name][near] = np.maximum(inner[name][near], value)
    # Nested: each compartment takes what the inner ones leave, all within the parenchyma.
    necrosis = inner["necrosis"]
    tumour = np.clip(inner["tumour"] - necrosis, 0.0, None)
    oedema = np.clip(inner["oedema"] - inner["tumour"] - necrosis, 0.0, None)
    taken = np.clip(necrosis + tumour + oedema, 0.0, 1.0)
    keep = 1.0 - taken
    out = dict(fractions)
    out["gm"], out["wm"] = gm * keep, wm * keep
    out["necrosis"], out["tumour"], out["oedema"] = (necrosis * parenchyma,
                                                     tumour * parenchyma,
                                                     oedema * parenchyma)
    return out
