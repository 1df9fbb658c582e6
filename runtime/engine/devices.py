"""Device names: one list per kind of command and one way of refusing anything else.

Every command that takes a device (`mri2mri-run`, `mri2mri-register`,
`mri2mri-bench`, `mri2mri-export --check-on`, `mri2mri-train`) validates it
here, so a typo gets the same one-line error everywhere. The onnxruntime
commands share `RUNTIME_DEVICES`; training (PyTorch) has no TensorRT.
"""

from __future__ import annotations

from collections.abc import Sequence

from mri2mri.runtime.core.errors import InputError

#: onnxruntime: ``auto`` = TensorRT, then CUDA, then the CPU, whichever really starts.
RUNTIME_DEVICES = ("auto", "tensorrt", "cuda", "cpu")
#: PyTorch training: ``auto`` = CUDA when a GPU is visible, else the CPU.
TORCH_DEVICES = ("auto", "cuda", "cpu")
#: Where `mri2mri-export` checks parity (the provider the model will run on).
CHECK_DEVICES = ("cpu", "cuda")


def check_device(value: str, allowed: Sequence[str] = RUNTIME_DEVICES,
                 option: str = "--device") -> str:
    """`value` in lower case if it is one of `allowed`, else `InputError` naming the choices."""
    name = str(value).strip().lower()
    if name not in allowed:
        raise InputError(None, f"{option} must be one of {', '.join(allowed)} (got {value!r})")
    return name
