"""The demo cohort's README (`mri2mri-data demo`): what was simulated, option by option.

Kept apart from `demo_cohort` so that the simulator module holds the physics only.
"""

from __future__ import annotations

#: Not BIDS, listed in ``.bidsignore``: the optional preview picture.
PREVIEW_FILE = "preview.png"
README = f"""# mri2mri simulated demo cohort

A simulated BIDS cohort (T1w, T2w, PDw, DWI) written by `mri2mri-data demo`: the grey-
and white-matter probability maps of the MNI ICBM152 2009c template, deformed per
subject, imaged with the signal equations of the IXI protocols, with smooth bias fields
and Rician noise. It is a phantom, not real data; `dataset_description.json` holds every
simulation parameter.

Not BIDS, listed in .bidsignore: `{PREVIEW_FILE}` (one subject's contrasts).
"""
README_HEAD = """
With `--head`: CSF, skull, scalp muscle, fat and skin shells around the brain
(`mri2mri.data.simulate.head`); fat is bright on T1w and suppressed on the DWI.
"""
README_EPI = """
With `--epi`: the DWI is read out by a simulated single-shot spin-echo EPI
(`mri2mri.data.simulate.epi`): off-resonance distortion along the phase-encoding
axis with pile-up, IXI-like k-space coverage, a Nyquist ghost and Rician noise.
"""
README_UNDISTORTED = """
Without DWI distortion: no susceptibility displacement moves the DWI (an undistorted
spin-echo image on its own grid, in the same world space as the anatomical images).
"""


def readme(*, head: bool, epi: bool, dwi_distortion: bool) -> str:
    """The README of a cohort made with these options."""
    return (README + (README_HEAD if head else "") + (README_EPI if epi else "")
            + ("" if dwi_distortion else README_UNDISTORTED))
