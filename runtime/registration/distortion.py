"""Susceptibility distortion correction without a field map, through a b=0 synthesized from the T1w.

Why through a synthesized b=0: without a field map or a reversed phase-encoding scan, the
usual fallback (SyN-SDC, as in SDCFlows) registers the distorted b=0 to the T1w itself,
across contrasts with mutual information, a weak signal that must be regularised hard. A
model that turns the T1w into a b=0-like image gives an undistorted image of the *same*
contrast as the distorted one, so local cross-correlation can be used and the field is
found where the contrast says it is.

Steps: the T1w is registered rigidly to the mean b=0 (`register_images`, as
`mri2mri-register` does); the model synthesizes a b=0 from the T1w, resliced onto the
series' grid by that transform; the distorted mean b=0 is registered to it along the
phase-encoding axis only (`distortion_field`); every volume is resampled once, rigid map
and displacement composed, with the Jacobian intensity correction (`distortion_apply`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.nifti import image_like, load_volume

from .align import Registration, check_overlap, register_images
from .distortion_apply import rotate_bvecs, unwarp_series
from .distortion_field import DEFAULT_FIELD_SETTINGS, Displacement, FieldSettings
from .distortion_field import estimate_displacement as estimate_displacement
from .distortion_inputs import EpiSeries, ReadOut, read_readout, read_series
from .masks import brain_mask

if TYPE_CHECKING:  # hints only: the model session is imported where a model runs
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer


class Clock:
    """Wall and CPU seconds of each named stage (CPU: this process, every thread)."""

    def __init__(self, progress: Callable[[str], None] | None = None) -> None:
        self.say = progress or (lambda _m: None)
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, message: str | None = None) -> Iterator[None]:
        if message:
            self.say(message)
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - wall
        self.cpu[name] = self.cpu.get(name, 0.0) + time.process_time() - cpu


@dataclass
class Synthesized:
    """The b=0 the model made from the T1w (on the T1w's grid) and what was learned on the way."""

    image: nib.Nifti1Image
    model: str
    task: str
    ood: str
    execution: dict[str, object] = field(default_factory=dict)
    #: The model file's SHA-256: the sidecar records it, and a BIDS App rerun skips only
    #: the units this model made.
    sha256: str = ""


def b0_model(model: str | Path | Synthesizer, say: Callable[[str], None],
             **engine: object) -> Synthesizer:
    """A T1w -> b0 model session: `model` loaded (a file or a starter model's name, with
    `engine`'s device, threads, trt_cache), or one already loaded (the BIDS App loads it
    once for every unit); any other model is refused."""
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

    synth = model if isinstance(model, Synthesizer) else Synthesizer(model, notify=say, **engine)
    if synth.sources != ["T1w"] or synth.target != "b0":
        raise InputError(synth.model_path, f"model {synth.task} does not make a b0 from a T1w: "
                                           "distortion correction needs a T1w -> b0 model")
    return synth


def synthesize_b0(model: str | Path | Synthesizer, t1w: nib.Nifti1Image, t1w_path: str | Path,
                  say: Callable[[str], None], **engine: object) -> Synthesized:
    """The model's b=0 of the T1w; the model must be a one-source T1w -> b0 model."""
    from mri2mri.runtime.synthesis.ood_checks import OodChecks

    synth = b0_model(model, say, **engine)
    checks = OodChecks(synth.meta, disagreement=False)  # the histogram check, nearly free
    image = synth.synthesize([t1w], **checks.hooks)
    if checks.histogram.flagged:
        say(f"warning: {t1w_path}: {checks.histogram.message}")
    return Synthesized(image, str(synth.model_path), synth.task, checks.histogram.message,
                       synth.execution_info(), synth.model_sha256)


def reference_on_grid(synthesized: nib.Nifti1Image, registration: Registration,
                      series_b0: nib.Nifti1Image) -> np.ndarray:
    """The synthesized b=0 resliced onto the series' grid by the rigid T1w -> b=0 transform."""
    return np.asarray(registration.resample(synthesized, series_b0).dataobj, np.float32)


@dataclass
class Correction:
    """Everything one correction computed (before anything is written)."""

    series: EpiSeries
    t1w: nib.Nifti1Image
    readout: ReadOut
    registration: Registration
    synthesized: Synthesized
    reference: np.ndarray
    displacement: Displacement
    corrected: np.ndarray
    bvecs: np.ndarray | None
    brain: np.ndarray
    clock: Clock

    def summary(self) -> dict[str, float]:
        """The displacement inside the brain (mm) and the field's range (Hz), for people."""
        mm = np.abs(self.displacement.mm[self.brain])
        hz = self.displacement.hz(self.readout.total_readout_time, self.readout.pe_sign)
        return {"mean_abs_displacement_mm": round(float(mm.mean()), 4),
                "p95_abs_displacement_mm": round(float(np.percentile(mm, 95)), 4),
                "max_abs_displacement_mm": round(float(mm.max()), 4),
                "field_min_hz": round(float(hz[self.brain].min()), 3),
                "field_max_hz": round(float(hz[self.brain].max()), 3)}


def compute_correction(dwi: str | Path, t1w: str | Path, model: str | Path | Synthesizer, *,
                       bvals: str | Path | None = None, bvecs: str | Path | None = None,
                       sidecar: str | Path | None = None, phase_encoding: str | None = None,
                       total_readout_time: float | None = None,
                       field_settings: FieldSettings = DEFAULT_FIELD_SETTINGS,
                       registration_settings: str = "fast", device: str = "cpu",
                       threads: int | None = None, trt_cache: bool | str | Path = True,
                       progress: Callable[[str], None] | None = None) -> Correction:
    """Every step of the correction, in memory (see the module's docstring)."""
    clock = Clock(progress)
    with clock.stage("load"):  # silent: a bad input is then the only line
        series = read_series(dwi, bvals, bvecs)
        readout = read_readout(dwi, series.data.shape, sidecar=sidecar,
                               phase_encoding=phase_encoding,
                               total_readout_time=total_readout_time)
        t1w_img = load_volume(t1w)
        check_overlap(t1w_img, series.b0, str(t1w), str(dwi))
        # loaded once, here: a missing or wrong model fails before the rigid registration
        synth = b0_model(model, clock.say, device=device, threads=threads, trt_cache=trt_cache)
    with clock.stage("rigid", "registering the T1w to the mean b=0 (rigid)"):
        reg = register_images(t1w_img, series.b0, transform="rigid",
                              settings=registration_settings)
    with clock.stage("synthesis", f"synthesizing a b=0 from the T1w ({synth.model_path.name})"):
        synthesized = synthesize_b0(synth, t1w_img, t1w, clock.say)
        reference = reference_on_grid(synthesized.image, reg, series.b0)
    zooms = nib.affines.voxel_sizes(series.image.affine)
    with clock.stage("field", "estimating the displacement along "
                              f"{readout.phase_encoding} (SyN, cross-correlation)"):
        b0 = np.asarray(series.b0.dataobj, np.float32)
        brain = brain_mask(image_like(series.b0, reference))  # undistorted, as the field
        displacement = estimate_displacement(b0, reference, zooms, readout.pe_axis,
                                             settings=field_settings, brain=brain)
    count = series.data.shape[3] if series.data.ndim == 4 else 1
    with clock.stage("resample", f"resampling {count} volume(s) once (rigid + displacement "
                                 "+ Jacobian)"):
        corrected = unwarp_series(series.data, series.image.affine, displacement,
                                  rigid=reg.affine)
        rotated = None if series.bvecs is None else rotate_bvecs(
            series.bvecs, series.image.affine, reg.affine)
    return Correction(series, t1w_img, readout, reg, synthesized, reference, displacement,
                      corrected, rotated, brain, clock)

