"""mri2mri.runtime: the torch-free half of mri2mri.

Everything here needs only numpy, scipy, nibabel and onnxruntime: NIfTI I/O and
validation, the preprocessing shared by training and inference, the model
metadata schema, and the ONNX synthesis engine.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .core.errors import InputError

try:
    __version__ = version("mri2mri")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["InputError", "__version__"]
