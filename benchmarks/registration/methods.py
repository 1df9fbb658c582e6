"""The registration methods the benchmark compares, behind one call signature.

A method takes (moving, static) images and returns the static->moving world
affine (DIPY's convention) and the seconds it took, synthesis and masks included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.imaging.normalize import foreground_mask
from mri2mri.runtime.registration import register_images
from mri2mri.runtime.registration.masks import brain_mask

from .ants_baseline import ants_register

#: Method names as they appear in results.csv and the figure.
DIRECT, VIA, ANTS = "dipy_direct", "dipy_via", "ants"
#: `--masks`: `none`, or `brain`: the DIPY methods restrict their metric to brain masks
#: (static: `brain_mask` of the image registered to, the b=0 or the synthesized image;
#: moving: the moving image's foreground, the brain in a cohort without skull).
MASKS = ("none", "brain")


def brain_masks(moving: nib.Nifti1Image, static: nib.Nifti1Image, masks: str
                ) -> dict[str, np.ndarray | None]:
    """`register_images`' mask arguments for a `--masks` choice."""
    if masks not in MASKS:
        raise ValueError(f"unknown masks {masks!r}; choose from {', '.join(MASKS)}")
    if masks == "none":
        return {"moving_mask": None, "static_mask": None}
    return {"moving_mask": foreground_mask(np.asarray(moving.dataobj, dtype=np.float32)),
            "static_mask": brain_mask(static)}


@dataclass
class DipyDirect:
    """DIPY mutual information, moving image straight to the static image."""

    settings: str = "fast"
    transform: str = "rigid"
    masks: str = "none"
    name: str = DIRECT

    def __call__(self, moving: nib.Nifti1Image, static: nib.Nifti1Image
                 ) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        masks = brain_masks(moving, static, self.masks)
        masking = time.perf_counter() - start
        reg = register_images(moving, static, transform=self.transform, settings=self.settings,
                              **masks)
        return reg.affine, masking + reg.seconds


@dataclass
class DipyVia:
    """DIPY mutual information to the image the model synthesizes from the static image."""

    model: Path
    settings: str = "fast"
    transform: str = "rigid"
    threads: int = 1
    device: str = "cpu"
    masks: str = "none"
    name: str = VIA
    _synth: object | None = field(default=None, repr=False)

    def synthesizer(self):  # noqa: ANN201 (Synthesizer is imported lazily with onnxruntime)
        if self._synth is None:
            from mri2mri.runtime.synthesis.synthesizer import Synthesizer

            self._synth = Synthesizer(self.model, device=self.device, threads=self.threads)
        return self._synth

    def __call__(self, moving: nib.Nifti1Image, static: nib.Nifti1Image
                 ) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        reference = self.synthesizer().synthesize([static])
        reg = register_images(moving, reference, transform=self.transform,
                              settings=self.settings, **brain_masks(moving, reference, self.masks))
        return reg.affine, time.perf_counter() - start


@dataclass
class Ants:
    """ANTs rigid, Mattes MI (see `ants_baseline.ANTS_SETTINGS`)."""

    name: str = ANTS

    def __call__(self, moving: nib.Nifti1Image, static: nib.Nifti1Image
                 ) -> tuple[np.ndarray, float]:
        return ants_register(moving, static)
