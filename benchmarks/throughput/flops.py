"""Work per slice, counted from the exported ONNX graph (not from the PyTorch module).

Shapes come from `onnx.shape_inference` after fixing the dynamic input axes;
multiply-accumulates are counted for Conv, ConvTranspose, Gemm and MatMul (the
element-wise operators are a rounding error next to them). FLOPs = 2 x MACs.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import onnx
from onnx import helper, numpy_helper, shape_inference


def _fix_input_shape(model: onnx.ModelProto, shape: tuple[int, ...]) -> None:
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = value


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = shape_inference.infer_shapes(model, strict_mode=True)
    shapes: dict[str, list[int]] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        shapes[info.name] = [d.dim_value for d in dims]
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    for node in graph.node:  # initialisers routed through Identity or Constant nodes
        if node.op_type == "Constant":
            shapes[node.output[0]] = list(numpy_helper.to_array(node.attribute[0].t).shape)
    return shapes


def count_macs(model: str | Path | onnx.ModelProto, input_shape: tuple[int, ...]
               ) -> dict[str, int]:
    """Multiply-accumulates per operator type for one run with `input_shape` (N, C, H, W)."""
    proto = onnx.load(str(model)) if not isinstance(model, onnx.ModelProto) else model
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never modify the caller's
    _fix_input_shape(proto, input_shape)
    shapes = _shapes(proto)
    macs: dict[str, int] = {}
    for node in proto.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            w, y = shapes[node.input[1]], shapes[node.output[0]]
            count = prod(y) * prod(w[1:])  # every output element: Cin/group x kh x kw MACs
        elif node.op_type == "ConvTranspose":
            w, x = shapes[node.input[1]], shapes[node.input[0]]
            # weight (Cin, Cout/group, kh, kw): each input scatters to Cout/group x kh x kw
            count = prod(x) * prod(w[1:])
        elif node.op_type in ("Gemm", "MatMul"):
            a, y = shapes[node.input[0]], shapes[node.output[0]]
            k = a[0] if node.op_type == "Gemm" and attrs.get("transA", 0) else a[-1]
            count = prod(y) * k
        else:
            continue
        if any(d <= 0 for d in shapes.get(node.output[0], [1])):
            raise ValueError(f"shape inference left {node.output[0]} unknown")
        macs[node.op_type] = macs.get(node.op_type, 0) + count
    return macs


def flops_per_slice(model: str | Path | onnx.ModelProto, channels: int, height: int,
                    width: int) -> float:
    """Floating-point operations (2 x MACs) to synthesize one slice."""
    return 2.0 * sum(count_macs(model, (1, channels, height, width)).values())
