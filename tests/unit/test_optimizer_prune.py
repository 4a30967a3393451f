"""Pruning rewrites on a hand-built graph whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from mserve_optimizer.prune import prune, prune_structured, prune_unstructured, sparsity
from onnx import TensorProto, helper, numpy_helper


def _mlp(dead: list[int]) -> onnx.ModelProto:
    """x[?,4] -> MatMul(4x6) -> Add(6) -> Relu -> MatMul(6x3) -> y; hidden neurons in `dead` never fire."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(size=(4, 6)).astype(np.float32)
    b1 = rng.normal(size=6).astype(np.float32)
    w2 = rng.normal(size=(6, 3)).astype(np.float32)
    w1[:, dead] = 0.0
    b1[dead] = 0.0
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
            helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
            helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
            helper.make_node("MatMul", ["h2", "w2"], ["y"], name="fc2"),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [
            numpy_helper.from_array(w1, "w1"),
            numpy_helper.from_array(b1, "b1"),
            numpy_helper.from_array(w2, "w2"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    return {init.name: tuple(init.dims) for init in model.graph.initializer}


def test_structured_pruning_removes_dead_neurons_without_changing_answers() -> None:
    model = _mlp(dead=[1, 4])
    x = np.random.default_rng(2).normal(size=(5, 4)).astype(np.float32)
    pruned, removed, total = prune_structured(model, 2 / 6)
    assert (removed, total) == (2, 6)
    assert _shapes(pruned) == {"w1": (4, 4), "b1": (4,), "w2": (4, 3)}
    onnx.checker.check_model(pruned, full_check=True)
    np.testing.assert_allclose(_run(pruned, x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_structured_pruning_leaves_uncuttable_layers_alone() -> None:
    model = _mlp(dead=[])
    model.graph.output.append(helper.make_tensor_value_info("h2", TensorProto.FLOAT, ["batch", 6]))
    pruned, removed, total = prune_structured(model, 0.5)
    assert (removed, total) == (0, 0)  # the hidden layer is also a graph output: not safe to cut
    assert _shapes(pruned) == _shapes(model)


def test_unstructured_pruning_zeroes_the_smallest_weights_per_tensor() -> None:
    model = _mlp(dead=[])
    pruned = prune_unstructured(model, 0.5)
    inits = {i.name: numpy_helper.to_array(i) for i in pruned.graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for name in ("w1", "w2"):
        zeroed = inits[name] == 0
        assert zeroed.sum() == original[name].size // 2
        assert np.abs(original[name][zeroed]).max() <= np.abs(original[name][~zeroed]).min()
    np.testing.assert_array_equal(inits["b1"], original["b1"])  # biases are not prunable weights
    assert sparsity(pruned) == 0.5


def test_prune_reports_figures() -> None:
    _, figures = prune(_mlp(dead=[0]), 1 / 6, "structured")
    assert (figures.structured_removed, figures.structured_total) == (1, 6)
    assert figures.size_after_bytes < figures.size_before_bytes
    assert figures.requested == 1 / 6
