"""Checkpoint -> self-describing ONNX model, verified against PyTorch before it is kept.

The graph takes ``sources`` (N, C, H, W) float32 in the normalised [-1, 1] range
and returns ``target`` (N, 1, H, W) and, second, ``features`` (N, C', H/2^L, W/2^L):
the innermost encoder block's activations, which the runtime's feature check
(`mri2mri.runtime.synthesis.features`) reads for a few slices; a consumer that asks for
``target`` only gets it as before. Batch, height and width are dynamic (H and W
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
from mri2mri.runtime.synthesis.features import OUTPUT_NAME as FEATURES_NAME
from mri2mri.train.checkpoint import Checkpoint, as_checkpoint, read_checkpoint
from mri2mri.train.inference import model_from_checkpoint
from mri2mri.train.model import UNet

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
    #: Max |ONNX - PyTorch| of the feature output, relative to max(1, its largest value).
    feature_diff: float = 0.0


def export_metadata(state: Checkpoint | dict[str, Any], checkpoint: Path, opset: int,
                    fp16: bool) -> ModelMetadata:
    """The checkpoint's metadata plus provenance: best validation metrics (a run's
    checkpoint), export settings."""
    state = as_checkpoint(state, checkpoint)
    meta = state.model_metadata(checkpoint)
    training = dict(meta.training)
    best = state.run.best if state.run is not None else {}
    if best:
        training["best_epoch"] = best.get("epoch")
        training["validation"] = {**training.get("validation", {}),
                                  "model": best.get("metrics", {})}
    training["checkpoint"] = checkpoint.name
    training["export"] = {"opset": opset, "precision": "fp16" if fp16 else "fp32",
                          "exporter_package_version": __version__}
    meta.training = training
    return meta


class _WithFeatures(torch.nn.Module):
    """The U-Net with its bottleneck as a second output (`UNet.forward_with_features`)."""

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.forward_with_features(x)


def _to_onnx(model: UNet, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    import io
    import warnings

    buffer = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    small = {0: "batch", 2: "feature_height", 3: "feature_width"}
    # The TorchScript exporter (dynamo=False) needs no onnxscript and handles this plain
    # convolutional graph exactly; its deprecation notice is not actionable for users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        wrapped = _WithFeatures(model).eval()  # export restores the mode it was given
        torch.onnx.export(wrapped, (example,), buffer, input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME, FEATURES_NAME], opset_version=opset,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes,
                                        FEATURES_NAME: small},
                          do_constant_folding=True, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def run_as_runtime(path: Path, slices: np.ndarray, device: str = "cpu"
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """`slices` through the model as `mri2mri-run` runs it on `device` (cpu or cuda): the
    image output and the feature maps of every slice (None for a one-output model).

    The runtime's own provider set-up (`open_session`: CUDA with TF32 off) and
    slice runner, so parity is checked on the provider that will run the model.
    """
    from mri2mri.runtime.engine.providers import open_session
    from mri2mri.runtime.engine.session import SliceRunner, session_options

    session, provider = open_session(path.read_bytes(), session_options(), device, path,
                                     option="--check-on")
    runner = SliceRunner(session, provider, batch_size=len(slices))
    return runner.run_collecting(slices, range(len(slices)))


def _max_diff(got: np.ndarray | None, expected: np.ndarray, scale: bool = False) -> float:
    """Max |got - expected| (relative to max(1, max |expected|) when `scale`)."""
    if got is None:
        return float("inf")
    diff = float(np.max(np.abs(got.astype(np.float64) - expected)))
    return diff / max(1.0, float(np.max(np.abs(expected)))) if scale else diff


def export_checkpoint(checkpoint: str | Path, out: str | Path, *, opset: int = DEFAULT_OPSET,
                      fp16: bool = False, overwrite: bool = False,
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
    state = read_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(state)
    if state.parity_slices is None:
        raise InputError(checkpoint, "checkpoint has no validation slices for the parity check")
    slices = state.parity_slices.float().numpy()
    meta = export_metadata(state, checkpoint, opset, fp16)
    with torch.no_grad():
        expected, expected_maps = (t.numpy() for t in
                                   model.forward_with_features(torch.from_numpy(slices)))
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
        got, maps = run_as_runtime(tmp, slices, check_on)
        diff = _max_diff(got, expected)
        # The features are unbounded activations: compared relative to their size.
        feature_diff = _max_diff(maps, expected_maps, scale=True)
        for what, found in (("output", diff), ("feature output (relative)", feature_diff)):
            if not found <= tolerance:
                raise InputError(out, f"ONNX {what} on {check_on} differs from PyTorch by "
                                      f"{found:.3g} (tolerance {tolerance:g}); the file was "
                                      "not written")
    return ExportReport(out, opset, fp16, diff, tolerance, len(slices), meta, check_on,
                        feature_diff)
