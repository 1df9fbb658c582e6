"""Tiny ONNX models and NIfTI volumes for runtime tests, built without the training code.

`channel_picker` is a 1x1 convolution that copies one input channel to the output:
in the network's [-1, 1] space it is the identity on that channel, so the
synthesized volume must equal ``source * target_scale / source_scale`` voxel by
voxel, a known function that exposes any orientation, padding or channel-order bug.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mri2mri.runtime.metadata import ModelMetadata, Normalisation


def channel_picker(path: Path, sources: list[str], target: str, pick: int = 0,
                   target_scale: float = 500.0, batch: int | str = "N", kernel: int = 1,
                   with_metadata: bool = True, pad_multiple: int = 8) -> Path:
    """Save a Conv(k x k, output = input channel `pick`) + identity model with mri2mri metadata.

    With `kernel` 3 the weights are a centred delta, still an exact copy, but the
    graph then exercises real spatial convolution with padding.
    """
    c = len(sources)
    weight = np.zeros((1, c, kernel, kernel), np.float32)
    weight[0, pick, kernel // 2, kernel // 2] = 1.0
    x = helper.make_tensor_value_info("slices", TensorProto.FLOAT, [batch, c, "H", "W"])
    y = helper.make_tensor_value_info("synth", TensorProto.FLOAT, [batch, 1, "H", "W"])
    w = helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel().tolist())
    b = helper.make_tensor("b", TensorProto.FLOAT, [1], [0.0])
    conv = helper.make_node("Conv", ["slices", "w", "b"], ["synth"],
                            pads=[kernel // 2] * 4, kernel_shape=[kernel, kernel])
    graph = helper.make_graph([conv], "picker", [x], [y], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if with_metadata:
        meta = ModelMetadata(sources=sources, target=target, pad_multiple=pad_multiple,
                             normalisation=Normalisation(target_scale=target_scale))
        helper.set_model_props(model, meta.to_onnx_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def stand_in(path: Path, nodes: list, outputs: list[tuple[str, tuple[str, str]]],
             inits: list | None = None, ood: dict | None = None, batch: int | str = "N") -> Path:
    """Save a one-source T1w -> T2w model of `nodes` (input ``x``; `outputs`: each output's
    name and height/width dimensions, one channel) with mri2mri metadata and `ood` records."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, "H", "W"])
    ys = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 1, *dims])
          for name, dims in outputs]
    model = helper.make_model(helper.make_graph(nodes, "stand-in", [x], ys, inits or []),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ModelMetadata(sources=["T1w"], target="T2w", pad_multiple=8, ood=ood or {},
                         normalisation=Normalisation(target_scale=500.0))
    helper.set_model_props(model, meta.to_onnx_props())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def volume(shape: tuple[int, int, int] = (20, 23, 9), seed: int = 0) -> np.ndarray:
    """A head-like, asymmetric test volume: bright ellipsoid with texture on a zero background."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum((g / r) ** 2 for g, r in zip(grid, (0.8, 0.7, 0.9), strict=True)) < 1
    ramp = 300 + 200 * (grid[0] + 1) + 100 * (grid[1] + 1) ** 2 + 50 * grid[2]
    data = np.where(inside, ramp + rng.uniform(0, 40, shape), 0.0)
    return data.astype(np.float32)


def nifti(data: np.ndarray, affine: np.ndarray | None = None, qform_code: int = 1,
          sform_code: int = 1) -> nib.Nifti1Image:
    """A NIfTI image with explicit qform/sform codes and mm/s units."""
    affine = np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    return img


def oblique_affine() -> np.ndarray:
    """A rotated (about 20 and 10 degrees), anisotropic, LPS-ish affine."""
    a, b = np.deg2rad(20), np.deg2rad(10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([-1.5, -2.0, 3.0])
    affine[:3, 3] = [40.0, 60.0, -20.0]
    return affine


@pytest.fixture(autouse=True)
def collect_sessions() -> Iterator[None]:
    """Free onnxruntime sessions left in reference cycles (tracebacks of expected errors).

    A session owns native worker threads. If one is still garbage when a later test
    forks worker processes (the demo-cohort generator does), the child's garbage
    collector destroys the copied session, waits for threads that do not exist in
    the child, and hangs. Collecting after every test keeps forks safe.
    """
    yield
    gc.collect()
