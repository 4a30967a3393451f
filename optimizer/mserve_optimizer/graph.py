"""ONNX checker, shape inference, and onnxruntime's offline graph optimizer."""

from __future__ import annotations

from pathlib import Path

import onnx
import onnxruntime as ort

from mserve_optimizer.errors import BadInputError

_LEVELS = {
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run the ONNX checker, then shape inference (which the quantizers rely on)."""
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise BadInputError(f"ONNX checker rejected the model: {first}") from None
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False, data_prop=True)
    except Exception as exc:
        raise BadInputError(
            f"ONNX shape inference failed: {str(exc).strip().splitlines()[0][:300]}"
        ) from None


def optimize_graph(src: Path, dest: Path, level: str) -> None:
    """Save the graph as onnxruntime optimizes it offline.

    `basic` (the default) keeps to standard ONNX ops (constant folding, redundant node
    removal), so the result stays portable and quantizable; `extended`/`all` add fusions
    into onnxruntime contrib ops. onnxruntime re-applies its optimizations at load in the
    runtime anyway, which is why a higher offline level buys little on CPU.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.optimized_model_filepath = str(dest)
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        raise BadInputError(f"onnxruntime cannot load the model: {first}") from None


def weight_count(model: onnx.ModelProto) -> int:
    return sum(int(_numel(init)) for init in model.graph.initializer)


def _numel(tensor: onnx.TensorProto) -> int:
    total = 1
    for dim in tensor.dims:
        total *= dim
    return total
