"""Contrast names: one spelling each, with the aliases users type."""

from __future__ import annotations

#: Canonical names. Anatomical ones are BIDS suffixes; ``b0`` is the mean b=0 of a DWI.
CONTRASTS = ("T1w", "T2w", "PDw", "angio", "b0")

_ALIASES = {
    "t1": "T1w", "t1w": "T1w",
    "t2": "T2w", "t2w": "T2w",
    "pd": "PDw", "pdw": "PDw",
    "mra": "angio", "angio": "angio", "tof": "angio",
    "b0": "b0", "b=0": "b0", "dwi": "b0", "dwib0": "b0",
}


def canonical_contrast(name: str) -> str:
    """Return the canonical spelling of a contrast name, or raise ValueError."""
    key = name.strip().lower().replace("_", "").replace("-", "")
    if key not in _ALIASES:
        raise ValueError(f"unknown contrast {name!r}; known: {', '.join(CONTRASTS)} "
                         "(aliases: T1, T2, PD, MRA, DWI)")
    return _ALIASES[key]
