"""mri2mri.runtime.registration: T1w -> b=0 registration, directly or through a synthesized image.

The second product of the runtime, beside synthesis: `align` wraps DIPY's
mutual-information registration with the study's and a fast preset, `io` reads and
writes the transforms (plain 4x4 and ITK/ANTs), `via` registers two files,
optionally through an image synthesized by an mri2mri model, and `cli` is
`mri2mri-register`. Simulated head motions and registration errors against a known
answer live with the benchmark (`mri2mri.benchmarks.registration`).
"""

from __future__ import annotations

from .align import (
    SETTINGS,
    Registration,
    RegistrationSettings,
    check_overlap,
    get_settings,
    register_images,
    with_settings,
)

__all__ = ["SETTINGS", "Registration", "RegistrationSettings", "check_overlap", "get_settings",
           "register_images", "with_settings"]
