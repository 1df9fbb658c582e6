"""What distortion correction needs to know about an EPI series: its read-out and its volumes.

Why it is checked so strictly: the field in Hz is the displacement divided by the
TotalReadoutTime, along the PhaseEncodingDirection; a wrong sign or time gives a field map
that looks plausible and is wrong. So each value comes from the BIDS sidecar (or, where the
sidecar lacks it, an option), BIDS's fallback TotalReadoutTime = EffectiveEchoSpacing x
(ReconMatrixPE - 1) is used only when TotalReadoutTime is absent, and any two sources that
disagree are an error naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from mri2mri.runtime.bids.names import bval_path, bvec_path, sidecar_path
from mri2mri.runtime.core.errors import InputError, exception_summary
from mri2mri.runtime.imaging.nifti import B0_THRESHOLD, load_volume, read_bvals

PE_DIRECTIONS = ("i", "i-", "j", "j-", "k", "k-")
#: Relative disagreement tolerated between TotalReadoutTime and its echo-spacing form
#: (scanners round the echo spacing).
READOUT_TOLERANCE = 0.02
#: A TotalReadoutTime above this (s) is almost surely milliseconds.
MAX_READOUT_S = 0.5


@dataclass(frozen=True)
class ReadOut:
    """The EPI read-out: PhaseEncodingDirection (BIDS, on the image's voxel axes) and time."""

    phase_encoding: str
    total_readout_time: float
    #: Where each value came from, in words (for the provenance sidecar and the report).
    origin: dict[str, str] = field(default_factory=dict)

    @property
    def pe_axis(self) -> int:
        return "ijk".index(self.phase_encoding[0])

    @property
    def pe_sign(self) -> int:
        return -1 if self.phase_encoding.endswith("-") else 1


def read_sidecar(path: Path) -> dict:
    """A JSON sidecar as a dict ({} when there is none); an unreadable one is an error."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON sidecar ({exception_summary(exc)})") from None
    if not isinstance(data, dict):
        raise InputError(path, "a JSON sidecar must hold an object")
    return data


def _number(meta: dict, key: str, where: Path) -> float | None:
    value = meta.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(where, f"{key} must be a positive number of seconds, not {value!r}")
    return float(value)


def _phase_encoding(meta: dict, given: str | None, sidecar: Path) -> tuple[str, str]:
    value = meta.get("PhaseEncodingDirection")
    if value is not None and value not in PE_DIRECTIONS:
        raise InputError(sidecar, f"PhaseEncodingDirection {value!r} is not one of "
                                  f"{', '.join(PE_DIRECTIONS)}")
    if given is not None and given not in PE_DIRECTIONS:
        raise InputError(None, f"--phase-encoding-direction {given!r}: use one of "
                               f"{', '.join(PE_DIRECTIONS)}")
    if value is not None and given is not None and value != given:
        raise InputError(sidecar, f"PhaseEncodingDirection is {value!r} but "
                                  f"--phase-encoding-direction says {given!r}")
    if value is None and given is None:
        raise InputError(sidecar, "PhaseEncodingDirection is missing; give it with "
                                  "--phase-encoding-direction (i, i-, j, j-, k or k-)")
    return (value, f"{sidecar.name}") if value is not None else (given, "option")


def _echo_spacing_form(meta: dict, n_pe: int, sidecar: Path) -> float | None:
    """EffectiveEchoSpacing x (ReconMatrixPE - 1), BIDS's definition, when the sidecar has it."""
    spacing = _number(meta, "EffectiveEchoSpacing", sidecar)
    if spacing is None:
        return None
    recon = meta.get("ReconMatrixPE", n_pe)
    if recon != n_pe:
        raise InputError(sidecar, f"ReconMatrixPE is {recon} but the image has {n_pe} voxels "
                                  "along its phase-encoding axis")
    return spacing * (n_pe - 1)


def _readout_time(meta: dict, given: float | None, n_pe: int, sidecar: Path
                  ) -> tuple[float, str]:
    total = _number(meta, "TotalReadoutTime", sidecar)
    derived = _echo_spacing_form(meta, n_pe, sidecar)
    if total is not None and derived is not None \
            and abs(total - derived) > READOUT_TOLERANCE * total:
        raise InputError(sidecar, f"TotalReadoutTime {total:g} s contradicts "
                                  f"EffectiveEchoSpacing x (ReconMatrixPE - 1) = {derived:g} s")
    found, origin = (total, sidecar.name) if total is not None else (
        (derived, f"{sidecar.name}: EffectiveEchoSpacing x (ReconMatrixPE - 1)")
        if derived is not None else (None, ""))
    if given is not None:
        if not given > 0:
            raise InputError(None, f"--total-readout-time must be positive, not {given:g}")
        if found is not None and abs(found - given) > READOUT_TOLERANCE * found:
            raise InputError(sidecar, f"TotalReadoutTime is {found:g} s but "
                                      f"--total-readout-time says {given:g} s")
        found, origin = (found, origin) if found is not None else (given, "option")
    if found is None:
        raise InputError(sidecar, "TotalReadoutTime is missing (and no EffectiveEchoSpacing to "
                                  "derive it); give it with --total-readout-time SECONDS")
    if found > MAX_READOUT_S:
        raise InputError(sidecar if origin != "option" else None,
                         f"TotalReadoutTime {found:g} s is too long for an EPI read-out "
                         "(milliseconds given as seconds?)")
    return found, origin


def read_readout(image: str | Path, shape: tuple[int, ...], *, sidecar: str | Path | None = None,
                 phase_encoding: str | None = None,
                 total_readout_time: float | None = None) -> ReadOut:
    """The read-out of `image` (voxel `shape`) from its sidecar and/or the options."""
    path = Path(sidecar) if sidecar is not None else sidecar_path(image)
    if sidecar is not None and not path.is_file():
        raise InputError(path, "sidecar file not found")
    meta = read_sidecar(path)
    direction, pe_origin = _phase_encoding(meta, phase_encoding, path)
    n_pe = int(shape["ijk".index(direction[0])])
    seconds, time_origin = _readout_time(meta, total_readout_time, n_pe, path)
    return ReadOut(direction, seconds, {"PhaseEncodingDirection": pe_origin,
                                        "TotalReadoutTime": time_origin})


@dataclass
class EpiSeries:
    """An EPI series as read: the image (3D or 4D), its b-values and b-vectors (4D only)."""

    image: nib.Nifti1Image
    data: np.ndarray
    #: The mean of the b=0 volumes (the volume itself for a 3D image), float32, checked.
    b0: nib.Nifti1Image
    bvals: np.ndarray | None
    bvecs: np.ndarray | None
    bval_file: Path | None = None
    bvec_file: Path | None = None

    @property
    def b0_mask(self) -> np.ndarray:
        """Which volumes are b=0 (all of them for a 3D image or a series without b-values)."""
        if self.data.ndim == 3 or self.bvals is None:
            return np.ones(1 if self.data.ndim == 3 else self.data.shape[3], bool)
        return self.bvals <= B0_THRESHOLD


def read_bvecs(path: Path, count: int) -> np.ndarray:
    """An FSL .bvec file: 3 rows of `count` numbers (a transposed file is accepted)."""
    if not path.is_file():
        raise InputError(path, "b-vector file not found")
    try:
        values = np.loadtxt(path, dtype=float, ndmin=2)
    except ValueError as exc:
        raise InputError(path, f"not a b-vector file ({exception_summary(exc)})") from None
    if values.shape == (count, 3) and count != 3:
        values = values.T
    if values.shape != (3, count):
        raise InputError(path, f"expected 3 rows of {count} numbers, found shape {values.shape}")
    return values


def read_series(path: str | Path, bvals: str | Path | None = None,
                bvecs: str | Path | None = None) -> EpiSeries:
    """A 3D b=0 or a 4D DWI; a 4D one needs its .bval and .bvec (default: beside it)."""
    path = Path(path)
    bval_file = Path(bvals) if bvals is not None else bval_path(path)
    b0 = load_volume(path, bval_file)  # every check of a volume (and a 4D one has a b=0)
    img = nib.load(str(path))
    data = np.asarray(img.dataobj, dtype=np.float32)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 3:
        return EpiSeries(img, data, b0, None, None)
    bvec_file = Path(bvecs) if bvecs is not None else bvec_path(path)
    if bvec_file is None:
        raise InputError(path, "a 4D DWI needs its .bvec file (beside it, or --bvec): its "
                               "b-vectors turn with the alignment to the T1w")
    return EpiSeries(img, data, b0, read_bvals(bval_file),
                     read_bvecs(bvec_file, data.shape[3]), bval_file, bvec_file)
