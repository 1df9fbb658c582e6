"""An exact rewrite of the decoder's ConvTranspose(4x4, stride 2, pad 1), measured.

onnxruntime runs ConvTranspose as a GEMM followed by a col2im scatter; two thirds
of the reference U-Net's time is spent there. The same operator is four 2x2
convolutions, one per output phase (row and column parity), interleaved by
DepthToSpace; a BatchNormalization that follows is folded into the weights
first (a BN after DepthToSpace could no longer be fused). Same multiply-adds,
outputs equal to ~1e-8. Measured on the 2-core machine (docs/benchmarks.md):
4-9 % faster, so it is offered as a post-processing step, not a runtime default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _rewritable(node: onnx.NodeProto) -> bool:
    a = _attrs(node)
    return (node.op_type == "ConvTranspose" and list(a.get("kernel_shape", [])) == [4, 4]
            and list(a.get("strides", [])) == [2, 2] and list(a.get("pads", [])) == [1] * 4
            and a.get("group", 1) == 1 and list(a.get("dilations", [1, 1])) == [1, 1]
            and "output_padding" not in a and "output_shape" not in a)


def subpixel_rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` with every 4x4/2/1 ConvTranspose (+ BatchNorm) as phase convolutions."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    alias = {n.output[0]: n.input[0] for n in graph.node
             if n.op_type == "Identity" and n.input[0] in inits}

    def array(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[alias.get(name, name)]).astype(np.float64)

    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, dropped, new_inits = [], set(), []
    for node in graph.node:
        if id(node) in dropped:
            continue
        if not _rewritable(node):
            nodes.append(node)
            continue
        weight = array(node.input[1])  # (Cin, Cout, 4, 4)
        bias = array(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(
            weight.shape[1])
        out = node.output[0]
        users = consumers.get(out, [])
        if len(users) == 1 and users[0].op_type == "BatchNormalization":
            bn = users[0]
            scale = array(bn.input[1]) / np.sqrt(array(bn.input[4])
                                                 + _attrs(bn).get("epsilon", 1e-5))
            weight = weight * scale[None, :, None, None]
            bias = (bias - array(bn.input[3])) * scale + array(bn.input[2])
            dropped.add(id(bn))
            out = bn.output[0]
        phases = []
        for row in (0, 1):
            for col in (0, 1):
                # Output row 2m+row takes input rows (m-1, m) for row 0, (m, m+1) for row 1,
                # with kernel taps (3, 1) and (2, 0) respectively.
                taps_r, taps_c = [3 - row, 1 - row], [3 - col, 1 - col]
                kernel = weight[:, :, taps_r][:, :, :, taps_c].transpose(1, 0, 2, 3)
                tag = f"{node.name or out}_phase{row}{col}"
                new_inits += [numpy_helper.from_array(kernel.astype(np.float32), f"{tag}_w"),
                              numpy_helper.from_array(bias.astype(np.float32), f"{tag}_b")]
                nodes.append(helper.make_node("Conv", [node.input[0], f"{tag}_w", f"{tag}_b"],
                                              [tag], name=tag, kernel_shape=[2, 2],
                                              pads=[1 - row, 1 - col, row, col]))
                phases.append(tag)
        nodes.append(helper.make_node("Concat", phases, [f"{out}_phases"], axis=1))
        nodes.append(helper.make_node("DepthToSpace", [f"{out}_phases"], [out], blocksize=2,
                                      mode="DCR"))
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(new_inits)
    used = {name for node in graph.node for name in node.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(model)
    return model


def rewrite_file(src: str | Path, dst: str | Path) -> Path:
    """`subpixel_rewrite` from file to file; metadata properties are kept."""
    onnx.save(subpixel_rewrite(onnx.load(str(src))), str(dst))
    return Path(dst)
