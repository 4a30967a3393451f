"""Which graphs count as already quantized: the op kinds and the QDQ weights, not a float model's own ops."""

from __future__ import annotations

import numpy as np
import onnx
from mserve_optimizer.quantized_graph import describe, quantized_nodes
from onnx import TensorProto, helper, numpy_helper


def _graph(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto]) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    return helper.make_model(graph)


def _scale() -> list[onnx.TensorProto]:
    return [
        numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(0, dtype=np.int8), "z"),
    ]


def test_a_float_graph_is_not_quantized() -> None:
    w = numpy_helper.from_array(np.ones((4, 4), dtype=np.float32), "w")
    model = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [w])
    assert not quantized_nodes(model)
    assert describe(quantized_nodes(model)) == ""


def test_qdq_weights_count_but_a_float_dequantize_does_not() -> None:
    w8 = numpy_helper.from_array(np.ones((4, 4), dtype=np.int8), "w8")
    nodes = [
        helper.make_node("DequantizeLinear", ["w8", "s", "z"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    assert quantized_nodes(_graph(nodes, [w8, *_scale()])) == {"DequantizeLinear": 1}
    # A DequantizeLinear of a computed (non-initializer) tensor alone does not mark INT8 weights.
    computed = [helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])]
    assert not quantized_nodes(_graph(computed, _scale()))


def test_integer_ops_are_named_most_frequent_first() -> None:
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "qs", "qz"]),
        helper.make_node("MatMulInteger", ["q", "w8", "qz", "z"], ["m1"]),
        helper.make_node("MatMulInteger", ["q", "w8", "qz", "z"], ["m2"]),
        helper.make_node("QLinearConv", ["q"], ["y"]),
    ]
    found = quantized_nodes(_graph(nodes, []))
    assert found == {"MatMulInteger": 2, "DynamicQuantizeLinear": 1, "QLinearConv": 1}
    assert describe(found).startswith("2 MatMulInteger")
