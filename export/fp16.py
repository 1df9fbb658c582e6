"""fp32 ONNX graph -> fp16 weights and arithmetic, with float32 inputs and outputs.

Uses onnxruntime's maintained converter (`onnxruntime.transformers.float16`,
``keep_io_types=True``): it knows which operators must stay in fp32 and
inserts the Casts, so callers keep feeding and receiving float32. Its Casts are
appended at the end of the node list, which the ONNX checker rejects, so the
graph is then sorted topologically with onnxruntime's own `OnnxModel`.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float16, its inputs and outputs still float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    copy = onnx.ModelProto.FromString(model.SerializeToString())
    half = OnnxModel(convert_float_to_float16(copy, keep_io_types=True))
    half.topological_sort()
    result = half.model
    for value in [*result.graph.input, *result.graph.output]:
        if value.type.tensor_type.elem_type != TensorProto.FLOAT:
            raise ValueError(f"fp16 conversion changed the type of {value.name!r}")
    return result
