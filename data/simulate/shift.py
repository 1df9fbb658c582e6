"""Acquisition shifts of the demo cohort: the same anatomy imaged by a simulated other scanner.

A shift changes, per contrast, the sequence parameters of the signal equations
(TR, TE, TI, flip angle, shot interval), the grey/white-matter contrast directly,
the SNR, the bias-field strength and the acquired resolution (a Gaussian blur of
the given FWHM before noise, as a coarser acquisition reconstructed on the same
grid). None of these draws random numbers, so a shifted cohort made with the
same seed has the same anatomy, bias-field shapes and noise realisations as the
unshifted one: a paired comparison of the shift alone.

Written as ``CONTRAST.FIELD=VALUE`` items (``mri2mri-data demo --shift``), e.g.
``T1w.ti=1400`` or ``T1w.gm_wm_contrast=0.5``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from .tissue import PROTOCOLS, Protocol

#: Contrasts a shift can name (the simulated acquisitions).
SHIFTABLE = ("T1w", "T2w", "PDw", "dwi")
PROTOCOL_FIELDS = ("tr", "te", "ti", "flip", "shot_interval")
#: Other per-contrast fields and what they mean.
OTHER_FIELDS = {
    "gm_wm_contrast": "exponent k of the GM/WM signal ratio: S_gm -> S_wm (S_gm / S_wm) ** k "
                      "(0.5 halves the log contrast, 2 doubles it)",
    "snr": "white-matter signal over noise sigma",
    "bias_peak": "peak of the log bias field (default 0.15)",
    "blur_fwhm_mm": "Gaussian blur FWHM in mm before noise (a coarser acquisition)",
}


@dataclass(frozen=True)
class AcquisitionShift:
    """Per-contrast changes to the simulated acquisition; empty = the default scanner."""

    protocol: dict[str, dict[str, float]] = field(default_factory=dict)
    gm_wm_contrast: dict[str, float] = field(default_factory=dict)
    snr: dict[str, float] = field(default_factory=dict)
    bias_peak: dict[str, float] = field(default_factory=dict)
    blur_fwhm_mm: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("protocol", *OTHER_FIELDS):
            for contrast, value in getattr(self, name).items():
                if contrast not in SHIFTABLE:
                    raise ValueError(f"shift: unknown contrast {contrast!r}; use one of "
                                     f"{', '.join(SHIFTABLE)}")
                values = value.values() if isinstance(value, dict) else [value]
                if any(v < 0 for v in values):
                    raise ValueError(f"shift: {contrast}.{name} must not be negative")
        for changes in self.protocol.values():
            unknown = set(changes) - set(PROTOCOL_FIELDS)
            if unknown:
                raise ValueError(f"shift: unknown protocol field(s) {sorted(unknown)}")
        if any(v <= 0 for v in self.snr.values()):
            raise ValueError("shift: snr must be positive")

    @property
    def empty(self) -> bool:
        return not any(asdict(self).values())

    def protocol_for(self, contrast: str) -> Protocol:
        """The (possibly shifted) sequence parameters of one contrast."""
        return replace(PROTOCOLS[contrast], **self.protocol.get(contrast, {}))

    @classmethod
    def parse(cls, items: list[str]) -> AcquisitionShift:
        """``["T1w.ti=1400", "T1w.snr=10"]`` -> a shift; ValueError on a bad item."""
        data: dict[str, dict] = {"protocol": {}, **{k: {} for k in OTHER_FIELDS}}
        for item in items:
            key, sep, value = item.partition("=")
            contrast, dot, name = key.strip().partition(".")
            if not sep or not dot:
                raise ValueError(f"shift {item!r}: expected CONTRAST.FIELD=VALUE")
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"shift {item!r}: {value!r} is not a number") from None
            if name in PROTOCOL_FIELDS:
                data["protocol"].setdefault(contrast, {})[name] = number
            elif name in OTHER_FIELDS:
                data[name][contrast] = number
            else:
                raise ValueError(f"shift {item!r}: unknown field {name!r}; use one of "
                                 f"{', '.join(PROTOCOL_FIELDS + tuple(OTHER_FIELDS))}")
        return cls(**data)
