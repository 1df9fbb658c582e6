"""Import the public IXI dataset into the BIDS-like layout the rest of mri2mri reads.

`import_ixi` is the entry point; `mri2mri-data ixi` is its command line. Importing
this package stays light: the heavy modules (DIPY, matplotlib) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .importer import ImportReport, SubjectResult, import_ixi

__all__ = ["ImportReport", "SubjectResult", "import_ixi"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from . import importer

        return getattr(importer, name)
    raise AttributeError(name)
