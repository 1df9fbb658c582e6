"""The model card of a starter model: what it is, how it was made, what it scores.

Why one page per model: a user who runs ``--model T1w-to-T2w`` on a scanner it never saw
should read, next to the file, that it learnt from simulated brains only, the recipe and
seed that rebuild it, and how it did on real scans and held-out simulated ones, scored
level-free against the look-up tables a user could fit instead.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mri2mri.runtime.core.atomic import atomic_path

if TYPE_CHECKING:
    from .build import StarterBuild
    from .recipes import Recipe


def _table(summary: dict[str, Any]) -> str:
    from mri2mri.benchmarks.generalisation.zero_shot import table

    return table(summary)


def _mean_line(summary: dict[str, Any]) -> str:
    mean = summary["mean"]
    psnr = {m: mean[m]["brain"]["level_free_psnr"] for m in ("model", "lut_others", "lut_own")}
    return (f"mean level-free PSNR {psnr['model']:.2f} dB; LUT of the other subjects "
            f"{psnr['lut_others']:.2f}; each subject's own LUT {psnr['lut_own']:.2f}")


def variety_words(text: str) -> str:
    """What the recipe's variety gives each simulated subject, from its parsed values."""
    from mri2mri.data.simulate.variety import Variety

    v = Variety.parse(text)
    parts = [f"a random scanner with probability {v.scanners:g}" if v.scanners else
             "the IXI protocols",
             f"up to {v.max_lesions} tumour/necrosis/oedema lesions with probability "
             f"{v.lesions:g}" if v.lesions else "healthy template brains, no lesions",
             f"an imperfect skull stripping with probability {v.skull_strip:g}"
             if v.skull_strip else "no skull stripping"]
    return ", ".join(parts)


def _cohort_words(r: Recipe) -> str:
    """What else the simulated subjects hold: a head, and what the b=0 is."""
    words = ""
    if r.head:
        words += (" Each subject has a head (CSF, skull, scalp muscle, fat and skin around "
                  "the brain), as a T1w acquired without skull stripping has.")
    if r.has_b0:
        words += (" The b=0 is the mean of the b=0 volumes of a simulated spin-echo DWI on "
                  "its own oblique grid, fat-suppressed, "
                  + ("with a smooth susceptibility displacement along the phase-encoding "
                     "axis." if r.dwi_distortion else "undistorted (no susceptibility "
                     "displacement)."))
    return words


def real_words(r: Recipe, summary: dict[str, Any]) -> str:
    """What the zero-shot folder was: for a b=0 model, a pseudo-DWI cohort (real T1w, a
    b=0 simulated from the real T2w) is said so, and whether its b=0 is distorted."""
    dataset = summary["dataset"]
    if not r.has_b0 or "pseudo-DWI" not in dataset:
        return f"Real pairs it never saw (`{dataset}`): "
    words = (f"Real anatomy it never saw (`{dataset}`, a pseudo-DWI folder: each subject's "
             "real T1w and a b=0 simulated from its real T2w by `mri2mri-data pseudo-dwi`, "
             "not a real b=0")
    try:
        description = json.loads((Path(summary["real"]) / "dataset_description.json")
                                 .read_text())
        readout = description["SimulationParameters"]["epi"]["total_readout_time"]
    except (OSError, ValueError, KeyError, TypeError):
        readout = None
    if readout == 0:
        words += ", undistorted (`--no-distortion`)"
    elif readout is not None:
        words += (", with an EPI distortion that the model's b=0 does not have (made "
                  "without `--no-distortion`)")
    return words + "): "


def card_text(build: StarterBuild) -> str:
    """The card's Markdown."""
    r = build.recipe
    train = ", ".join(f"{k}={v}" for k, v in r.train.items())
    times = ", ".join(f"{k} {v:.0f} s" for k, v in build.seconds.items())
    lines = [
        f"# {r.name}: mri2mri starter model", "", r.summary + ".", "",
        f"- Task: {'+'.join(r.sources)} -> {r.target}, a 2D U-Net on axial slices "
        "(mri2mri's perceptual loss).",
        f"- Training data: **simulated only** — {r.subjects} subjects of mri2mri's simulator "
        f"(MNI152 2009 anatomy) at {r.resolution:g} mm, variety `{r.variety}` "
        f"({variety_words(r.variety)})." + _cohort_words(r) + " No real scan was used.",
        f"- Recipe (`mri2mri.starters.recipes`): seed {r.seed}; training {train}.",
        f"- Rebuild: `mri2mri-starter build {r.name} --out DIR` (add `--real DIR` for the "
        "zero-shot table" + (": for a b=0 model DIR is used as it is, a folder with DWIs, "
                             "e.g. `mri2mri-data pseudo-dwi REAL DIR --no-distortion`"
                             if r.has_b0 else "") + ").",
        f"- Built in: {times} on {os.cpu_count()} CPU(s), {platform.machine()}."]
    if build.parity is not None:
        lines.append(f"- ONNX (what `mri2mri-run` runs) against PyTorch on {build.parity[1]} "
                     f"validation slices: max |difference| {build.parity[0]:.1e}.")
    lines += [
        "",
        "An MRI's intensity scale is arbitrary, so the output's overall level is a guess; "
        "scores are level-free (each image z-scored inside the brain)"
        + ("; the b=0 (and a T1w synthesized from it) is resampled onto the T1w's grid, "
           "where the two are compared voxel by voxel." if r.has_b0 else "."), "",
        "## Held-out simulated subjects", "", _mean_line(build.simulated), "",
        _table(build.simulated)]
    if build.real is not None:
        lines += ["## Zero-shot on real scans", "",
                  real_words(r, build.real) + _mean_line(build.real) + ".",
                  "", _table(build.real)]
    return "\n".join(lines).rstrip() + "\n"


def write_card(build: StarterBuild) -> None:
    with atomic_path(build.card, overwrite=True) as tmp:
        tmp.write_text(card_text(build))
