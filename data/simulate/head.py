"""A head around the template's brain: CSF, skull, scalp muscle, fat and skin shells.

nilearn ships the MNI152 2009 template brain-extracted (its "whole-head" T1 is
masked too), so the head is built from the brain mask by distance transforms:
the mask is closed (a 6 mm ball fills the sulcal gaps at the surface, so the
skull follows the brain's envelope, not its gyri) and shells are laid at
distances from that envelope, each with a one-voxel linear edge (partial volume).
Layers and thicknesses, inside out:

* subarachnoid CSF 2 mm beyond the envelope (plus the sulcal gaps the closing
  filled): assumption, the adult extra-cerebral CSF space being a few mm;
* skull 6.8 mm of cortical bone: the mean vault thickness of men (6.5 mm) and
  women (7.1 mm), Adeloye A et al., Am J Phys Anthropol 1975;43:23-30;
* scalp, in the three coverings MRI resolves (Hayman LA et al., "Clinical and
  imaging anatomy of the scalp", J Comput Assist Tomogr 2003;27:454-459):
  galea/periosteum 1.5 mm (muscle tissue), subcutaneous fat 4 mm, skin 1.5 mm
  (muscle tissue): assumptions within reported ranges (scalp skin 1.2-1.5 mm,
  subcutaneous fat 2 mm at the forehead to 6 mm at the temples).

Not modelled: the face, eyes, neck, skull base and its air cells (below the
brain the shells follow its underside down to the template's lower edge,
z = -72 mm), the temporalis muscle, diploic marrow, vessels, hair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class HeadLayers:
    """Shell thicknesses in mm, inside out (sources in the module docs)."""

    envelope_closing_mm: float = 6.0
    csf_mm: float = 2.0
    skull_mm: float = 6.8
    galea_mm: float = 1.5
    fat_mm: float = 4.0
    skin_mm: float = 1.5

    @property
    def thickness_mm(self) -> float:
        return self.csf_mm + self.skull_mm + self.galea_mm + self.fat_mm + self.skin_mm


def _shell(distance: np.ndarray, inner: float, outer: float) -> np.ndarray:
    """Fraction of each voxel between `inner` and `outer` mm (one-voxel linear edges)."""
    return (np.clip(distance - inner + 0.5, 0, 1) - np.clip(distance - outer + 0.5, 0, 1))


def head_fractions(brain_mask: np.ndarray, voxel_mm: float, layers: HeadLayers = HeadLayers()
                   ) -> dict[str, np.ndarray]:
    """Extra CSF, bone, muscle and fat fractions around a brain mask (isotropic voxels).

    The CSF fraction is of the space outside `brain_mask`; the caller adds it to
    the brain's own CSF. Fractions of a voxel add up to at most 1.
    """
    mask = np.asarray(brain_mask, bool)
    radius = layers.envelope_closing_mm
    pad = int(np.ceil((radius + layers.thickness_mm) / voxel_mm)) + 2
    padded = np.pad(mask, pad)
    # Closing by distances: dilate by r, then erode the dilation by r.
    dilated = ndimage.distance_transform_edt(~padded, sampling=voxel_mm) <= radius
    envelope = ndimage.distance_transform_edt(dilated, sampling=voxel_mm) > radius
    envelope = ndimage.binary_fill_holes(envelope | padded)
    distance = ndimage.distance_transform_edt(~envelope, sampling=voxel_mm)
    distance[envelope] = 0.0
    crop = tuple(slice(pad, -pad) for _ in range(3))
    distance, envelope = distance[crop], envelope[crop]
    edges = np.cumsum([0.0, layers.csf_mm, layers.skull_mm, layers.galea_mm, layers.fat_mm,
                       layers.skin_mm])
    shells = [_shell(distance, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    outside = ~mask
    csf = np.where(outside & envelope, 1.0, 0.0) + np.where(envelope, 0.0, shells[0])
    return {"csf": (csf * outside).astype(np.float32),
            "bone": shells[1].astype(np.float32),
            "muscle": (shells[2] + shells[4]).astype(np.float32),
            "fat": shells[3].astype(np.float32)}
