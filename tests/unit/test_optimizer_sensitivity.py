"""Per-layer INT8 sensitivity on a hand-built graph: the layer fed an outlier channel ranks first."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from mserve_optimizer.calibration import capture_node_inputs
from mserve_optimizer.options import InputSpec
from mserve_optimizer.sensitivity import layer_errors, most_sensitive
from onnx import TensorProto, helper, numpy_helper


def _two_layers(path: Path) -> None:
    rng = np.random.default_rng(0)
    spike = np.array([1, 1, 1, 1, 1, 1, 1, 300], dtype=np.float32)  # one channel 300x the rest
    w2 = rng.normal(size=(8, 4)).astype(np.float32)
    w2[7] /= 300  # as in transformers: the outlier channel's weights are small, the output is not its
    inits = [
        numpy_helper.from_array(rng.normal(size=(8, 8)).astype(np.float32), "w1"),
        numpy_helper.from_array(spike, "spike"),
        numpy_helper.from_array(w2, "w2"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"], name="calm"),
            helper.make_node("Mul", ["h", "spike"], ["hs"], name="spiky_scale"),
            helper.make_node("MatMul", ["hs", "w2"], ["y"], name="spiky"),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_the_layer_fed_an_outlier_channel_is_the_most_sensitive(tmp_path: Path) -> None:
    model = tmp_path / "two.onnx"
    _two_layers(model)
    samples = {"x": np.random.default_rng(1).normal(size=(20, 8)).astype(np.float32)}
    errors = layer_errors(model, samples, [InputSpec("x", (-1, 8))], tmp_path)
    assert set(errors) == {"calm", "spiky"}
    assert errors["spiky"] > 3 * errors["calm"], errors
    assert errors["calm"] < 0.05  # a well-spread input loses little
    assert most_sensitive(errors, 1) == ["spiky"]


def test_capturing_no_nodes_returns_nothing(tmp_path: Path) -> None:
    # onnxruntime answers session.run([]) with every output: asking for no node must not do that.
    model = tmp_path / "two.onnx"
    _two_layers(model)
    samples = {"x": np.ones((2, 8), dtype=np.float32)}
    assert capture_node_inputs(model, [], samples, [InputSpec("x", (-1, 8))], tmp_path) == {}
