"""Calibration data for static INT8, and where activation outliers make a layer sensitive to it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationDataReader

from mserve_optimizer.options import InputSpec
from mserve_optimizer.ort_session import open_session
from mserve_optimizer.samples import iter_batches

CALIBRATION_BATCH = 16
# max|x| over the 99.99th percentile of |x|: at this ratio a MinMax range spends most of its
# 256 levels on a handful of values and rounds the rest of the layer's input to a few steps.
OUTLIER_RATIO = 5.0
OUTLIER_RATIO_WIDE = 2.5
OUTLIER_QUANTILE = 0.9999
QUANTILE_SAMPLE = 1_000_000


class SampleReader(CalibrationDataReader):
    """Feeds the calibration samples to onnxruntime's calibrators, a batch at a time."""

    def __init__(self, samples: dict[str, np.ndarray], specs: list[InputSpec]) -> None:
        self._samples = samples
        self._specs = specs
        self.rewind()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:
        batches = list(iter_batches(self._samples, CALIBRATION_BATCH, self._specs))
        # onnxruntime's histogram calibrators stack batches and need them all the same size.
        if len(batches) > 1 and _batch_size(batches[-1]) != _batch_size(batches[0]):
            batches.pop()
        self._batches = iter(batches)


def _batch_size(feeds: dict[str, np.ndarray]) -> int:
    return min(array.shape[0] for array in feeds.values())


def weight_nodes(model: onnx.ModelProto, op_types: tuple[str, ...] = ("MatMul", "Gemm", "Conv")) -> list[str]:
    """Names of the nodes of `op_types` that multiply by a constant weight."""
    inits = {init.name for init in model.graph.initializer}
    return [
        n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in inits
    ]


def capture_node_inputs(
    path: Path, node_names: list[str], samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> dict[str, list[np.ndarray]]:
    """For each named node, the first input it receives on `samples`: one array per sample."""
    model = onnx.load(str(path))
    inputs = {n.name: n.input[0] for n in model.graph.node if n.name in node_names}
    if not inputs:  # session.run([]) would return every output, not none
        return {}
    existing = {value.name for value in model.graph.output}
    for tensor in sorted(set(inputs.values()) - existing):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
    probe = workdir / "activation-probe.onnx"
    onnx.save(model, str(probe))
    session = open_session(probe, level="basic")
    tensors = sorted(set(inputs.values()))
    collected: dict[str, list[np.ndarray]] = {t: [] for t in tensors}
    for feeds in iter_batches(samples, CALIBRATION_BATCH, specs):
        for tensor, value in zip(tensors, session.run(tensors, feeds), strict=True):
            collected[tensor].extend(np.asarray(value, dtype=np.float32))
    probe.unlink(missing_ok=True)
    return {node: collected[tensor] for node, tensor in inputs.items()}


def activation_outlier_ratios(
    path: Path, node_names: list[str], samples: dict[str, np.ndarray], specs: list[InputSpec], workdir: Path
) -> dict[str, float]:
    """For each named node, how far its input's largest value sits above the bulk of its values."""
    ratios = {}
    for node, arrays in capture_node_inputs(path, node_names, samples, specs, workdir).items():
        values = np.abs(np.concatenate([a.reshape(-1) for a in arrays])) if arrays else np.zeros(0)
        # The bulk's quantile from an even subsample (the max from everything) is accurate
        # enough and ~50x cheaper on a transformer's FFN activations.
        step = max(1, values.size // QUANTILE_SAMPLE)
        bulk = float(np.quantile(values[::step], OUTLIER_QUANTILE)) if values.size else 0.0
        ratios[node] = float(values.max() / bulk) if bulk > 0 else 0.0
    return ratios
