"""onnxruntime sessions as the optimizer uses them: CPU, a fixed thread count, outputs in batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from mserve_runtime import cpu_limit

from mserve_optimizer.errors import BadInputError
from mserve_optimizer.options import InputSpec
from mserve_optimizer.samples import iter_batches

VALIDATION_BATCH = 32


def default_threads() -> int:
    """The threads the runtime would use here: its cgroup CPU limit, as a Job with the serving
    pods' limit has, so that the optimizer times the model as it will be served."""
    return cpu_limit.default_threads()


def providers_for(device: str) -> list[str]:
    """CUDA first when the target is a GPU, the CPU for the ops CUDA lacks (as the runtime does)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]


def open_session(
    path: Path, *, threads: int | None = None, level: str = "all", device: str = "cpu"
) -> ort.InferenceSession:
    """A session on `device` with the graph optimizations the runtime will use at load."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers_for(device))
    except Exception as exc:
        raise BadInputError(f"{path.name}: onnxruntime cannot load the model: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:400] if lines else type(exc).__name__


def run_all(
    session: ort.InferenceSession, samples: dict[str, np.ndarray], specs: list[InputSpec]
) -> list[np.ndarray]:
    """Every output over every sample, concatenated along the batch axis."""
    names = [output.name for output in session.get_outputs()]
    chunks: list[list[np.ndarray]] = [[] for _ in names]
    for feeds in iter_batches(samples, VALIDATION_BATCH, specs):
        try:
            results = session.run(names, feeds)
        except Exception as exc:
            raise BadInputError(
                f"onnxruntime failed to run the model on the samples: {_first_line(exc)}"
            ) from None
        for store, value in zip(chunks, results, strict=True):
            store.append(np.asarray(value))
    return [np.concatenate(parts) if len(parts) > 1 else parts[0] for parts in chunks]
