"""The model card of a starter model: what it is, how it was made, what it scores.

Why one page per model: a user who runs ``--model T1w-to-T2w`` on a scanner it never saw
should read, next to the file, that it learnt from simulated brains only, the recipe and
seed that rebuild it, and how it did on real scans and held-out simulated ones, scored
level-free against the look-up tables a user could fit instead.
"""

from __future__ import annotations

import os
import platform
from typing import TYPE_CHECKING, Any

from mri2mri.runtime.core.atomic import atomic_path

if TYPE_CHECKING:
    from .build import StarterBuild


def _table(summary: dict[str, Any]) -> str:
    from mri2mri.benchmarks.generalisation.zero_shot import table

    return table(summary)


def _mean_line(summary: dict[str, Any]) -> str:
    mean = summary["mean"]
    psnr = {m: mean[m]["brain"]["level_free_psnr"] for m in ("model", "lut_others", "lut_own")}
    return (f"mean level-free PSNR {psnr['model']:.2f} dB; LUT of the other subjects "
            f"{psnr['lut_others']:.2f}; each subject's own LUT {psnr['lut_own']:.2f}")


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
        + ("(the IXI protocols on healthy template brains, no lesions, no skull stripping)"
           if r.variety == "none" else "(a random scanner, tumour/necrosis/oedema lesions and "
           "an imperfect skull stripping per subject, each with its probability)")
        + ". No real scan was used.",
        f"- Recipe (`mri2mri.starters.recipes`): seed {r.seed}; training {train}.",
        f"- Rebuild: `mri2mri-starter build {r.name} --out DIR` (add `--real DIR` for the "
        "zero-shot table).",
        f"- Built in: {times} on {os.cpu_count()} CPU(s), {platform.machine()}.", "",
        "An MRI's intensity scale is arbitrary, so the output's overall level is a guess; "
        "scores are level-free (each image z-scored inside the brain).", "",
        "## Held-out simulated subjects", "", _mean_line(build.simulated), "",
        _table(build.simulated)]
    if build.real is not None:
        lines += ["## Zero-shot on real scans", "",
                  f"Real pairs it never saw (`{build.real['dataset']}`): "
                  + _mean_line(build.real) + ".", "", _table(build.real)]
    return "\n".join(lines).rstrip() + "\n"


def write_card(build: StarterBuild) -> None:
    with atomic_path(build.card, overwrite=True) as tmp:
        tmp.write_text(card_text(build))
