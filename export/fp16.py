"""Convert an fp32 ONNX graph to fp16 weights and arithmetic, keeping fp32 inputs and outputs.

Halves the file size; callers keep feeding float32, because a Cast follows the
input and precedes the output. Written here (about 30 lines) instead of adding a
converter dependency, since the exported U-Net uses only a handful of operators.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _half(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type != TensorProto.FLOAT:
        return tensor
    array = numpy_helper.to_array(tensor).astype(np.float16)
    return numpy_helper.from_array(array, tensor.name)


def convert_to_fp16(model: onnx.ModelProto, input_name: str, output_name: str
                    ) -> onnx.ModelProto:
    """Return a copy of `model` computing in float16 with float32 `input_name`/`output_name`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        graph.initializer[i].CopyFrom(_half(tensor))
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                attr.t.CopyFrom(_half(attr.t))
        for i, name in enumerate(node.input):
            if name == input_name:
                node.input[i] = input_name + "_fp16"
        for i, name in enumerate(node.output):
            if name == output_name:
                node.output[i] = output_name + "_fp16"
    cast_in = helper.make_node("Cast", [input_name], [input_name + "_fp16"],
                               to=TensorProto.FLOAT16, name="cast_input_fp16")
    cast_out = helper.make_node("Cast", [output_name + "_fp16"], [output_name],
                                to=TensorProto.FLOAT, name="cast_output_fp32")
    nodes = [cast_in, *graph.node, cast_out]
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # stale fp32 types; recomputed by shape inference
    return model
