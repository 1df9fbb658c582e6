"""Parse IXI file names: `IXI002-Guys-0828-T1.nii.gz`, `...-DTI-07.nii.gz`.

IXI encodes subject number, site and a scan (session) number in every name; BIDS
labels must be alphanumeric, so the subject becomes ``sub-IXI002``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: IXI modality tag -> canonical mri2mri contrast (DTI is assembled separately).
MODALITIES = {"T1": "T1w", "T2": "T2w", "PD": "PDw", "MRA": "angio", "DTI": "dwi"}

_NAME = re.compile(
    r"^IXI(?P<number>\d+)-(?P<site>[A-Za-z]+)-(?P<session>\d+)-"
    r"(?P<modality>T1|T2|PD|MRA|DTI)(?:-(?P<volume>\d+))?\.nii(?:\.gz)?$"
)


@dataclass(frozen=True)
class IXIName:
    """The parts of one IXI file name."""

    number: str  # "002"
    site: str  # "Guys", "HH", "IOP"
    session: str  # "0828"
    modality: str  # "T1", "T2", "PD", "MRA", "DTI"
    volume: int | None  # DTI volume index, None for anatomical images

    @property
    def subject(self) -> str:
        """Alphanumeric BIDS label without the ``sub-`` prefix, e.g. ``IXI002``."""
        return f"IXI{self.number}"

    @property
    def contrast(self) -> str:
        return MODALITIES[self.modality]


def parse_name(filename: str) -> IXIName:
    """Parse a base file name; raise ValueError saying what an IXI name looks like."""
    m = _NAME.match(filename)
    if m is None:
        raise ValueError("not an IXI file name (expected e.g. IXI002-Guys-0828-T1.nii.gz "
                         "or IXI002-Guys-0828-DTI-00.nii.gz)")
    volume = m.group("volume")
    modality = m.group("modality")
    if (modality == "DTI") != (volume is not None):
        raise ValueError("DTI files need a volume number (-DTI-00) and only DTI files have one")
    return IXIName(m.group("number"), m.group("site"), m.group("session"), modality,
                   None if volume is None else int(volume))


def looks_like_nifti(filename: str) -> bool:
    """Files that are meant to be images (and so deserve a message when they do not parse)."""
    return filename.endswith((".nii", ".nii.gz"))
