"""Is the source already quantized? A second quantization pass cannot work on such a graph.

onnxruntime's quantizers expect float weights; given an INT8 graph (an artifact mserve made,
or one from another tool) they fail deep inside with errors that say nothing to a user.
"""

from __future__ import annotations

from collections import Counter

import onnx

# Ops that only exist in quantized graphs (QOperator format, dynamic quantization, onnxruntime's
# contrib quantized kernels).
QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "ConvInteger",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)
INTEGER_TYPES = frozenset({onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.INT4})


def quantized_nodes(model: onnx.ModelProto) -> Counter[str]:
    """Op type -> count of the nodes that mark `model` as quantized (empty: a float graph).

    QLinear* ops count, and so does a DequantizeLinear fed by an integer initializer (the
    weights of a QDQ graph); a DequantizeLinear of a float model's own making does not.
    """
    integer_inits = {init.name for init in model.graph.initializer if init.data_type in INTEGER_TYPES}
    found: Counter[str] = Counter()
    for node in model.graph.node:
        named = node.op_type in QUANTIZED_OPS or node.op_type.startswith("QLinear")
        integer_weight = node.op_type == "DequantizeLinear" and node.input and node.input[0] in integer_inits
        if named or integer_weight:
            found[node.op_type] += 1
    return found


def describe(found: Counter[str]) -> str:
    """`3 MatMulInteger, 3 DynamicQuantizeLinear`: the most frequent first."""
    return ", ".join(f"{count} {op}" for op, count in found.most_common(4))
