"""Registration through a synthesized intermediary, and the file-level workflow behind the CLI.

Why an intermediary: mutual information between a T1w and a b=0 image is a weak
signal (different contrasts, distortions, low resolution). A model that turns
the b=0 into a T1w-like image *on the b=0's own grid* turns the problem into a
same-contrast registration; the transform found for the synthesized image is,
by construction, the transform for the original static image.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib

from mri2mri.runtime.bids.names import NIFTI_EXTENSIONS, suffix_of
from mri2mri.runtime.core.atomic import check_output_path
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.nifti import load_volume, save_volume
from mri2mri.runtime.imaging.preprocess import PreparedSources
from mri2mri.runtime.synthesis.ood import assess, summarize_prepared

from .align import Registration, RegistrationSettings, check_overlap, register_images
from .io import save_itk, save_matrix


def contrast_from_name(path: str | Path) -> str | None:
    """The contrast a BIDS-like file name announces (``sub-1_T1w.nii.gz`` -> ``T1w``), if any."""
    suffix = suffix_of(path, NIFTI_EXTENSIONS)
    if suffix is None:
        return None
    try:
        return canonical_contrast(suffix)
    except ValueError:
        return None


def resolve_contrast(given: str | None, path: str | Path, what: str) -> str | None:
    """`given` (canonical spelling) or, failing that, the contrast the file name announces."""
    if given is not None:
        try:
            return canonical_contrast(given)
        except ValueError as exc:
            raise InputError(None, f"--{what}-contrast: {exc}") from None
    return contrast_from_name(path)


def check_via_model(sources: list[str], target: str, model: str | Path,
                    moving_contrast: str | None, static_contrast: str | None) -> None:
    """The model must turn the static contrast into the moving contrast; say which part is off."""
    task = "+".join(sources) + "->" + target
    if len(sources) != 1:
        raise InputError(model, f"model {task} needs {len(sources)} inputs; registration "
                                "needs a one-source model (static contrast -> moving contrast)")
    if moving_contrast is None:
        raise InputError(None, f"cannot tell the moving image's contrast from its file name; "
                               f"pass --moving-contrast (the model {task} makes {target})")
    if target != moving_contrast:
        raise InputError(model, f"model {task} synthesizes {target}, but the moving image is "
                                f"{moving_contrast}: use a model whose target is "
                                f"{moving_contrast}")
    if static_contrast is not None and sources[0] != static_contrast:
        raise InputError(model, f"model {task} expects a {sources[0]} input, but the static "
                                f"image is {static_contrast}")


@dataclass
class RegisterResult:
    """What `register_files` did: the registration, the stage times, the files written."""

    registration: Registration
    moving_contrast: str | None
    static_contrast: str | None
    via: str | None
    seconds: dict[str, float] = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    #: With `via`: whether the static image is like the model's training data (in words).
    ood: str = ""


def register_files(moving: str | Path, static: str | Path, *, out_affine: str | Path,
                   bvals: str | Path | None = None, via: str | Path | None = None,
                   moving_contrast: str | None = None, static_contrast: str | None = None,
                   out_itk: str | Path | None = None, out_resliced: str | Path | None = None,
                   out_synthesized: str | Path | None = None,
                   transform: str = "rigid", settings: str | RegistrationSettings = "fast",
                   device: str = "auto", threads: int | None = None, overwrite: bool = False,
                   progress: Callable[[str], None] | None = None,
                   trt_cache: bool | str | Path = True,
                   report: str | Path | None = None) -> RegisterResult:
    """Register the moving file to the static file (directly or `via` a model); write results.

    All output paths are checked before any work and written atomically, so a
    failure leaves no partial output. `report`: an HTML QC page (before/after with
    the static image's edges, a flicker, parameters and timings).
    """
    say = progress or (lambda _msg: None)
    outputs = [p for p in (out_affine, out_itk, out_resliced, out_synthesized, report)
               if p is not None]
    resolved = [Path(p).resolve() for p in outputs]
    if len(set(resolved)) != len(resolved):
        raise InputError(outputs[0], "the same path is given for two outputs")
    for path in outputs:
        check_output_path(path, overwrite=overwrite)
    if out_synthesized is not None and via is None:
        raise InputError(out_synthesized, "--out-synthesized needs --via MODEL")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    moving_img = load_volume(moving)
    static_img = load_volume(static, bvals)
    seconds["load"] = time.perf_counter() - start
    check_overlap(moving_img, static_img, str(moving), str(static))
    moving_c = resolve_contrast(moving_contrast, moving, "moving")
    static_c = resolve_contrast(static_contrast, static, "static")
    reference: nib.Nifti1Image = static_img
    ood = "no model used"
    if via is not None:
        from mri2mri.runtime.synthesis.synthesizer import Synthesizer

        start = time.perf_counter()
        say(f"loading model {via}")
        synth = Synthesizer(via, device=device, threads=threads, trt_cache=trt_cache,
                            notify=say)
        check_via_model(synth.sources, synth.target, via, moving_c, static_c)
        say(f"synthesizing {synth.target} from the static image ({synth.task}, "
            f"{synth.provider_name})")
        verdicts = []

        def inspect(prepared: PreparedSources) -> None:
            verdicts.append(assess(summarize_prepared(prepared, synth.sources),
                                   synth.meta.training_summary))

        reference = synth.synthesize([static_img], inspect=inspect)
        seconds["synthesis"] = time.perf_counter() - start
        ood = verdicts[0].message
        if verdicts[0].flagged:
            say(f"warning: {static}: {ood}")
    start = time.perf_counter()
    reg = register_images(moving_img, reference, transform=transform, settings=settings,
                          progress=lambda stage: say(f"registration: {stage}"))
    seconds["registration"] = time.perf_counter() - start
    written = [save_matrix(reg.affine, out_affine, overwrite=overwrite)]
    if out_itk is not None:
        written.append(save_itk(reg.affine, out_itk, overwrite=overwrite))
    if out_resliced is not None:
        written.append(save_volume(reg.resample(moving_img, static_img), out_resliced,
                                   overwrite=overwrite))
    if out_synthesized is not None:
        written.append(save_volume(reference, out_synthesized, overwrite=overwrite))
    if report is not None:
        from ..qc.registration import write_registration_report

        say("writing the QC report")
        params = {"moving": Path(moving).name, "static": Path(static).name,
                  "moving contrast": moving_c or "?", "static contrast": static_c or "?",
                  "via": Path(via).name if via is not None else "direct",
                  "static image vs the model's training data": ood,
                  "transform": reg.transform, "settings": reg.settings,
                  "affine (static -> moving, RAS mm)": " / ".join(
                      " ".join(f"{v:.4g}" for v in row) for row in reg.affine[:3])}
        written.append(write_registration_report(
            report, moving_img, static_img, reg.resample(moving_img, static_img), params,
            seconds, reference if via is not None else None))
    return RegisterResult(reg, moving_c, static_c, None if via is None else str(via), seconds,
                          written, ood)
