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
import numpy as np

from mri2mri.runtime.bids.names import NIFTI_EXTENSIONS, suffix_of
from mri2mri.runtime.core.atomic import check_output_path
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.imaging.contrasts import canonical_contrast
from mri2mri.runtime.imaging.nifti import load_volume, save_volume
from mri2mri.runtime.models.registry import resolve_model
from mri2mri.runtime.synthesis.ood_checks import OodChecks

from .align import Registration, RegistrationSettings, check_overlap, register_images
from .io import save_itk, save_matrix
from .masks import DEFAULT_VIA_MASK, VIA_MASKS, brain_mask, load_mask
from .recipes import via_recipe_warning


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


def check_via_model(sources: list[str], target: str, model: str | Path, *,
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
    #: With `via`: the warning `recipes.via_recipe_warning` gave for the model, if any.
    recipe_warning: str | None = None
    #: Which masks restricted the metric, in words ("moving: FILE", "static: auto", ...).
    masks: str = "none"


@dataclass
class _Masks:
    """The masks of one registration and where each came from (for the report)."""

    moving: np.ndarray | None = None
    static: np.ndarray | None = None
    origin: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in self.origin.items()) or "none"


@dataclass
class _Intermediary:
    """The synthesized image and what was learned about the model on the way."""

    image: nib.Nifti1Image
    ood: str
    recipe_warning: str | None


def _check_outputs(outputs: list[str | Path | None], *, overwrite: bool, via: object,
                   out_synthesized: str | Path | None, via_mask: str) -> None:
    """Every output path is free (or may be overwritten) and distinct, before any work."""
    given = [p for p in outputs if p is not None]
    resolved = [Path(p).resolve() for p in given]
    if len(set(resolved)) != len(resolved):
        raise InputError(given[0], "the same path is given for two outputs")
    for path in given:
        check_output_path(path, overwrite=overwrite)
    if out_synthesized is not None and via is None:
        raise InputError(out_synthesized, "--out-synthesized needs --via MODEL")
    if via_mask not in VIA_MASKS:
        raise InputError(None, f"--via-mask: choose from {', '.join(VIA_MASKS)} "
                               f"(got {via_mask!r})")


def _load_masks(moving_mask: str | Path | None, static_mask: str | Path | None,
                moving_img: nib.Nifti1Image, static_img: nib.Nifti1Image) -> _Masks:
    masks = _Masks()
    if moving_mask is not None:
        masks.moving = load_mask(moving_mask, moving_img)
        masks.origin["moving"] = Path(moving_mask).name
    if static_mask is not None:
        masks.static = load_mask(static_mask, static_img)
        masks.origin["static"] = Path(static_mask).name
    return masks


def _synthesize(via: str | Path, static_img: nib.Nifti1Image, static: str | Path, *,
                moving_c: str | None, static_c: str | None, say: Callable[[str], None],
                **engine: object) -> _Intermediary:
    """The model's image of the static one, checked against the task and its training data."""
    from mri2mri.runtime.synthesis.synthesizer import Synthesizer

    say(f"loading model {via}")
    synth = Synthesizer(via, notify=say, **engine)
    check_via_model(synth.sources, synth.target, via, moving_contrast=moving_c,
                    static_contrast=static_c)
    warning = via_recipe_warning(synth.meta)
    if warning is not None:
        say(f"warning: {via}: {warning}")
    say(f"synthesizing {synth.target} from the static image ({synth.task}, "
        f"{synth.provider_name})")
    checks = OodChecks(synth.meta, disagreement=False)  # the histogram check, nearly free
    image = synth.synthesize([static_img], **checks.hooks)
    if checks.histogram.flagged:
        say(f"warning: {static}: {checks.histogram.message}")
    return _Intermediary(image, checks.histogram.message, warning)


def _write_outputs(reg: Registration, moving_img: nib.Nifti1Image, static_img: nib.Nifti1Image,
                   paths: dict[str, str | Path | None], *,
                   synthesized: nib.Nifti1Image | None,
                   overwrite: bool) -> tuple[list[Path], nib.Nifti1Image | None]:
    """The transform files and images asked for; the resliced image (made once) for the report."""
    written = [save_matrix(reg.affine, paths["affine"], overwrite=overwrite)]
    if paths["itk"] is not None:
        written.append(save_itk(reg.affine, paths["itk"], overwrite=overwrite))
    resliced = None
    if paths["resliced"] is not None or paths["report"] is not None:
        resliced = reg.resample(moving_img, static_img)
    if paths["resliced"] is not None:
        written.append(save_volume(resliced, paths["resliced"], overwrite=overwrite))
    if paths["synthesized"] is not None:
        written.append(save_volume(synthesized, paths["synthesized"], overwrite=overwrite))
    return written, resliced


def _report_params(result: RegisterResult, moving: str | Path, static: str | Path
                   ) -> dict[str, str]:
    reg = result.registration
    return {"moving": Path(moving).name, "static": Path(static).name,
            "moving contrast": result.moving_contrast or "?",
            "static contrast": result.static_contrast or "?",
            "via": Path(result.via).name if result.via is not None else "direct",
            "static image vs the model's training data": result.ood,
            **({"model recipe": result.recipe_warning} if result.recipe_warning else {}),
            "masks": result.masks, "transform": reg.transform, "settings": reg.settings,
            "affine (static -> moving, RAS mm)": " / ".join(
                " ".join(f"{v:.4g}" for v in row) for row in reg.affine[:3])}


def register_files(moving: str | Path, static: str | Path, *, out_affine: str | Path,
                   bvals: str | Path | None = None, via: str | Path | None = None,
                   moving_contrast: str | None = None, static_contrast: str | None = None,
                   out_itk: str | Path | None = None, out_resliced: str | Path | None = None,
                   out_synthesized: str | Path | None = None,
                   transform: str = "rigid", settings: str | RegistrationSettings = "fast",
                   device: str = "auto", threads: int | None = None, overwrite: bool = False,
                   progress: Callable[[str], None] | None = None,
                   trt_cache: bool | str | Path = True,
                   report: str | Path | None = None,
                   moving_mask: str | Path | None = None, static_mask: str | Path | None = None,
                   via_mask: str = DEFAULT_VIA_MASK) -> RegisterResult:
    """Register the moving file to the static file (directly or `via` a model: an ONNX file or
    a starter model's name); write results.

    All output paths are checked before any work and written atomically, so a
    failure leaves no partial output. `report`: an HTML QC page (before/after with
    the static image's edges, a flicker, parameters and timings). `moving_mask`,
    `static_mask`: NIfTI masks on each image's grid. `via_mask`: with `via` and no
    `static_mask`, `auto` masks the synthesized image (`masks.brain_mask`), `none` does not.
    """
    say = progress or (lambda _msg: None)
    via = None if via is None else resolve_model(via)  # a file or a starter model's name
    paths = {"affine": out_affine, "itk": out_itk, "resliced": out_resliced,
             "synthesized": out_synthesized, "report": report}
    _check_outputs(list(paths.values()), overwrite=overwrite, via=via,
                   out_synthesized=out_synthesized, via_mask=via_mask)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    moving_img, static_img = load_volume(moving), load_volume(static, bvals)
    masks = _load_masks(moving_mask, static_mask, moving_img, static_img)
    seconds["load"] = time.perf_counter() - start
    check_overlap(moving_img, static_img, str(moving), str(static))
    moving_c = resolve_contrast(moving_contrast, moving, "moving")
    static_c = resolve_contrast(static_contrast, static, "static")
    middle = None
    if via is not None:
        start = time.perf_counter()
        middle = _synthesize(via, static_img, static, moving_c=moving_c, static_c=static_c,
                             say=say, device=device, threads=threads, trt_cache=trt_cache)
        if via_mask == "auto" and masks.static is None:
            masks.static, masks.origin["static"] = brain_mask(middle.image), "auto"
        seconds["synthesis"] = time.perf_counter() - start
    start = time.perf_counter()
    reg = register_images(moving_img, static_img if middle is None else middle.image,
                          transform=transform, settings=settings, moving_mask=masks.moving,
                          static_mask=masks.static,
                          progress=lambda stage: say(f"registration: {stage}"))
    seconds["registration"] = time.perf_counter() - start
    written, resliced = _write_outputs(
        reg, moving_img, static_img, paths,
        synthesized=None if middle is None else middle.image, overwrite=overwrite)
    result = RegisterResult(reg, moving_c, static_c, None if via is None else str(via), seconds,
                            written, "no model used" if middle is None else middle.ood,
                            None if middle is None else middle.recipe_warning, masks.describe())
    if report is not None:
        from ..qc.registration import write_registration_report

        say("writing the QC report")
        result.written.append(write_registration_report(
            report, moving_img, static_img, resliced,
            params=_report_params(result, moving, static), seconds=seconds,
            synthesized=None if middle is None else middle.image))
    return result
