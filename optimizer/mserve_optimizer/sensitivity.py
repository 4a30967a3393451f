"""Which weight layers lose most under dynamic INT8: measured per layer on the samples' own activations.

Each MatMul/Gemm with a constant weight is simulated as onnxruntime's dynamic INT8 runs it
(activations: one asymmetric uint8 range per call, i.e. per sample at batch 1; weights:
symmetric int8, one scale per output channel) on the inputs it really receives, and the
worst sample's relative output error is its sensitivity. Keeping only the few most
sensitive layers fp32 is what a tolerance on the worst sample needs; keeping every layer
with activation outliers (the older fallback) keeps more than that and costs speed and size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from mserve_optimizer.calibration import capture_node_inputs
from mserve_optimizer.options import InputSpec

SAMPLES = 16  # enough to find the worst layers; each layer's input is held in memory at once


def _fake_quant_activation(x: np.ndarray) -> np.ndarray:
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = (high - low) / 255.0 or 1.0
    zero = np.round(-low / scale)
    return (np.clip(np.round(x / scale) + zero, 0, 255) - zero) * scale


def _fake_quant_weight(w: np.ndarray) -> np.ndarray:
    scale = np.abs(w).max(axis=0, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    return np.clip(np.round(w / scale), -127, 127) * scale


def layer_errors(
    model_path: Path, samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> dict[str, float]:
    """Node name -> the worst sample's relative L2 output error under simulated dynamic INT8."""
    model = onnx.load(str(model_path))
    inits = {init.name: init for init in model.graph.initializer}
    weights: dict[str, np.ndarray] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
                w = w.T
            if w.ndim == 2:
                weights[node.name] = w
    few = {name: array[:SAMPLES] for name, array in samples.items()}
    inputs = capture_node_inputs(model_path, list(weights), few, specs, workdir)
    errors = {}
    for name, w in weights.items():
        wq = _fake_quant_weight(w)
        worst = 0.0
        for x in inputs[name]:  # one array per sample
            flat = x.reshape(-1, w.shape[0])
            exact = flat @ w
            approx = _fake_quant_activation(flat) @ wq
            norm = float(np.linalg.norm(exact)) or 1.0
            worst = max(worst, float(np.linalg.norm(approx - exact)) / norm)
        errors[name] = worst
    return errors


def most_sensitive(errors: dict[str, float], count: int) -> list[str]:
    return sorted(errors, key=lambda name: -errors[name])[:count]
