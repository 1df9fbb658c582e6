"""Checkpoint -> self-describing ONNX model, verified against PyTorch before it is kept.

The graph takes ``sources`` (N, C, H, W) float32 in the normalised [-1, 1] range
and returns ``target`` (N, 1, H, W); batch, height and width are dynamic (H and W
must follow the metadata's padding rule). Batch-norm runs with its running
statistics and is folded into the convolutions. The `ModelMetadata` JSON (the
schema the runtime reads) goes into ``metadata_props``, completed with the run's
provenance. The file only appears at `out` if onnxruntime reproduces PyTorch on
real validation slices within the tolerance.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from mri2mri.runtime import __version__
from mri2mri.runtime.core.atomic import atomic_path, check_output_path
from mri2mri.runtime.core.errors import InputError
from mri2mri.runtime.engine.devices import CHECK_DEVICES, check_device
from mri2mri.runtime.metadata import ModelMetadata
from mri2mri.train.checkpoint import load_checkpoint
from mri2mri.train.inference import model_from_checkpoint

from .fp16 import convert_to_fp16

DEFAULT_OPSET = 17
MIN_OPSET = 17
INPUT_NAME, OUTPUT_NAME = "sources", "target"
#: Max |ONNX - PyTorch| allowed on the parity slices (normalised [-1, 1] units), on the CPU
#: and on CUDA alike (CUDA runs with TF32 off, so fp32 means fp32; see docs/runtime.md).
TOLERANCE_FP32 = 1e-4
TOLERANCE_FP16 = 1e-2


@dataclass
class ExportReport:
    """What was written and how closely onnxruntime matches PyTorch."""

    path: Path
    opset: int
    fp16: bool
    max_abs_diff: float
    tolerance: float
    parity_slices: int
    metadata: ModelMetadata
    check_on: str = "cpu"


def export_metadata(state: dict[str, Any], checkpoint: Path, opset: int, fp16: bool
                    ) -> ModelMetadata:
    """The checkpoint's metadata plus provenance: best validation metrics, export settings."""
    meta = ModelMetadata.from_json(state["metadata"], str(checkpoint))
    training = dict(meta.training)
    best = state.get("best") or {}
    if best:
        training["best_epoch"] = best.get("epoch")
        training["validation"] = {**training.get("validation", {}),
                                  "model": best.get("metrics", {})}
    training["checkpoint"] = checkpoint.name
    training["export"] = {"opset": opset, "precision": "fp16" if fp16 else "fp32",
                          "exporter_package_version": __version__}
    meta.training = training
    return meta


def _to_onnx(model: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import io
    import warnings

    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    # The TorchScript exporter (dynamo=False) needs no onnxscript and handles this plain
    # convolutional graph exactly; its deprecation notice is not actionable for users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=opset,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                          do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def run_as_runtime(path: Path, slices: np.ndarray, device: str = "cpu") -> np.ndarray:
    """`slices` through the model as `mri2mri-run` runs it on `device` (cpu or cuda).

    The runtime's own provider set-up (`open_session`: CUDA with TF32 off) and
    slice runner, so parity is checked on the provider that will run the model.
    """
    from mri2mri.runtime.engine.providers import open_session
    from mri2mri.runtime.engine.session import SliceRunner, session_options

    session, provider = open_session(path.read_bytes(), session_options(), device, path,
                                     option="--check-on")
    return SliceRunner(session, provider, batch_size=len(slices)).run(slices)


def export_checkpoint(checkpoint: str | Path, out: str | Path, opset: int = DEFAULT_OPSET,
                      fp16: bool = False, *, overwrite: bool = False,
                      check_on: str = "cpu") -> ExportReport:
    """Export a training checkpoint to ONNX with metadata; keep it only if parity holds.

    `check_on` is the provider the parity check runs on (``cpu`` or ``cuda``);
    the PyTorch reference always runs in float32 on the CPU.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    check_on = check_device(check_on, CHECK_DEVICES, "--check-on")
    if opset < MIN_OPSET:
        raise InputError(None, f"opset {opset} is too old; use {MIN_OPSET} or newer")
    check_output_path(out, overwrite=overwrite)
    state = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(state)
    if "parity_slices" not in state:
        raise InputError(checkpoint, "checkpoint has no validation slices for the parity check")
    slices = state["parity_slices"].float().numpy()
    meta = export_metadata(state, checkpoint, opset, fp16)
    with torch.no_grad():
        expected = model(torch.from_numpy(slices)).numpy()
        proto = _to_onnx(copy.deepcopy(model), torch.from_numpy(slices[:1]), opset)
    if fp16:
        proto = convert_to_fp16(proto)
    proto.producer_name = "mri2mri"
    proto.producer_version = __version__
    proto.doc_string = f"mri2mri {meta.task} ({meta.preset} U-Net). {meta.weights_license}"
    onnx.helper.set_model_props(proto, meta.to_onnx_props())
    onnx.checker.check_model(proto, full_check=True)
    tolerance = TOLERANCE_FP16 if fp16 else TOLERANCE_FP32
    with atomic_path(out, overwrite=overwrite) as tmp:
        onnx.save(proto, str(tmp))
        got = run_as_runtime(tmp, slices, check_on)
        diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
        if not diff <= tolerance:
            raise InputError(out, f"ONNX output on {check_on} differs from PyTorch by "
                                  f"{diff:.3g} (tolerance {tolerance:g}); the file was not "
                                  "written")
    return ExportReport(out, opset, fp16, diff, tolerance, len(slices), meta, check_on)
