"""An ONNX model loaded into onnxruntime: metadata, input checks, and a synchronous run."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort
from mserve_contract.optimization_report import SessionOptions

from mserve_runtime.cpu_limit import default_threads
from mserve_runtime.datatypes import V2_TO_NUMPY, onnx_to_v2
from mserve_runtime.errors import InvalidInput, ModelLoadError, MServeError, ServerError
from mserve_runtime.inference_types import InputTensor, TensorMetadata
from mserve_runtime.settings import RuntimeSettings

log = logging.getLogger("mserve.model")

# After warm-up proved the graph runs, a failure on inputs that passed our checks comes from
# the values the client sent (mismatched sequence lengths, token ids out of range, ...).
_ORT_INPUT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(ort.capi.onnxruntime_pybind11_state, name)
    for name in ("InvalidArgument", "RuntimeException", "Fail")
    if hasattr(ort.capi.onnxruntime_pybind11_state, name)
)


def _dims(shape: Any) -> list[int]:
    """onnxruntime shapes hold ints for fixed dims and str/None for symbolic ones: map those to -1."""
    if not isinstance(shape, list | tuple):
        return []
    return [d if isinstance(d, int) and d >= 0 else -1 for d in shape]


def _describe(meta: TensorMetadata) -> str:
    return f"{meta.name} ({meta.datatype} {meta.shape})"


_GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(slots=True)
class SessionConfig:
    """onnxruntime session choices derived from RuntimeSettings."""

    threads: int
    device: str = "cpu"
    options: SessionOptions = field(default_factory=SessionOptions)
    origin: str = "runtime defaults"

    def describe(self) -> str:
        """The settings in force and where they came from, as the start-up log shows them."""
        applied = self.options.model_copy(update={"intra_op_threads": self.threads})
        return f"{applied.text()} ({self.origin})"


def session_config(settings: RuntimeSettings, cpus: int | None = None) -> SessionConfig:
    """Settings the optimizer recorded (MSERVE_SESSION_OPTIONS) over the defaults; MSERVE_THREADS wins.

    A recorded thread count above the CPUs this process may use (the optimizer's machine
    may have had more) is lowered to them: more threads than cores only contend.
    """
    cpus = cpus or default_threads()
    options = settings.session_options or SessionOptions()
    origin = "recorded by the optimizer" if settings.session_options else "runtime defaults"
    if settings.threads:
        threads, origin = settings.threads, f"{origin}; threads from MSERVE_THREADS"
    elif options.intra_op_threads > cpus:
        log.warning(
            "recorded intra_op_threads=%d is more than the %d CPUs this process may use; using %d",
            options.intra_op_threads,
            cpus,
            cpus,
        )
        threads = cpus
    else:
        threads = options.intra_op_threads or cpus
    return SessionConfig(threads, settings.device, options, origin)


def build_session(path: str, config: SessionConfig) -> ort.InferenceSession:
    """Open the model with the requested execution provider, or raise ModelLoadError saying why."""
    chosen = config.options
    options = ort.SessionOptions()
    options.intra_op_num_threads = config.threads
    options.graph_optimization_level = _GRAPH_LEVELS[chosen.graph_level]
    if chosen.execution_mode == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.inter_op_num_threads = chosen.inter_op_threads
    else:
        options.inter_op_num_threads = 1
    spinning = "1" if chosen.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    options.add_session_config_entry("session.inter_op.allow_spinning", spinning)
    if config.device == "cuda":
        available = ort.get_available_providers()
        if "CUDAExecutionProvider" not in available:
            raise ModelLoadError(
                "device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                f"(available: {', '.join(available)}); "
                "install mserve[gpu] and expose a GPU, or use --device cpu"
            )
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        providers = ["CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime cannot load {path}: {exc}") from exc
    if config.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ModelLoadError(
            "device 'cuda' requested but onnxruntime could not start CUDAExecutionProvider "
            "(no visible GPU or missing CUDA libraries; see the onnxruntime warning above)"
        )
    return session


class OnnxModel:
    """One loaded model. `run` is synchronous and thread-safe (onnxruntime sessions are)."""

    platform = "onnxruntime_onnx"

    def __init__(self, name: str, version: str, session: ort.InferenceSession) -> None:
        self.name = name
        self.version = version
        self.session = session
        try:
            self.inputs = [
                TensorMetadata(i.name, onnx_to_v2(i.type), _dims(i.shape)) for i in session.get_inputs()
            ]
            self.outputs = [
                TensorMetadata(o.name, onnx_to_v2(o.type), _dims(o.shape)) for o in session.get_outputs()
            ]
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
        self.input_by_name = {t.name: t for t in self.inputs}
        self.output_names = [t.name for t in self.outputs]
        self.providers = session.get_providers()

    @property
    def batchable(self) -> bool:
        """True when every input and output has a dynamic first dimension to merge requests along."""
        tensors = self.inputs + self.outputs
        return all(t.shape and t.shape[0] == -1 for t in tensors)

    def why_not_batchable(self) -> str:
        for t in self.inputs + self.outputs:
            if not t.shape or t.shape[0] != -1:
                return f"tensor '{t.name}' has shape {t.shape}, no dynamic first dimension"
        return ""

    def expected_inputs(self) -> str:
        return ", ".join(_describe(t) for t in self.inputs)

    def check_inputs(self, inputs: list[InputTensor]) -> dict[str, np.ndarray]:
        """Match the request's tensors against the model's inputs; the feed dict for run()."""
        feed: dict[str, np.ndarray] = {}
        for tensor in inputs:
            meta = self.input_by_name.get(tensor.name)
            if meta is None:
                raise InvalidInput(
                    f"unknown input '{tensor.name}'; the model expects inputs: {self.expected_inputs()}"
                )
            if tensor.name in feed:
                raise InvalidInput(f"input '{tensor.name}' is given more than once")
            if tensor.datatype != meta.datatype:
                raise InvalidInput(
                    f"input '{tensor.name}': expected datatype {meta.datatype}, received {tensor.datatype}"
                )
            shape = list(tensor.shape)
            fits = len(shape) == len(meta.shape) and all(
                e in (-1, r) for e, r in zip(meta.shape, shape, strict=True)
            )
            if not fits:
                raise InvalidInput(f"input '{tensor.name}': expected shape {meta.shape}, received {shape}")
            feed[tensor.name] = tensor.data
        if len(feed) != len(self.inputs):
            missing = [t.name for t in self.inputs if t.name not in feed]
            raise InvalidInput(
                f"missing input '{missing[0]}'; the model expects inputs: {self.expected_inputs()}"
            )
        return feed

    def check_outputs(self, names: list[str]) -> None:
        for name in names:
            if name not in self.output_names:
                raise InvalidInput(
                    f"unknown output '{name}'; the model's outputs are: {', '.join(self.output_names)}"
                )

    def run(self, feed: dict[str, np.ndarray], output_names: list[str] | None = None) -> list[np.ndarray]:
        """Run the session; outputs in the order of `output_names` (all outputs when None)."""
        try:
            return self.session.run(output_names, feed)
        except _ORT_INPUT_ERRORS as exc:
            raise InvalidInput(f"the model could not run on these inputs: {exc}") from exc
        except MServeError:  # a pool worker's crash (model_worker.ModelCrashed) keeps its status
            raise
        except Exception as exc:
            raise ServerError(f"onnxruntime failed: {exc}") from exc

    def warm_up_feed(self) -> dict[str, np.ndarray]:
        """Inputs of the right types, dynamic dimensions set to 1, to run once before turning ready."""
        feed = {}
        for meta in self.inputs:
            shape = [1 if d == -1 else d for d in meta.shape]
            dtype = V2_TO_NUMPY[meta.datatype]
            if meta.datatype == "BYTES":
                feed[meta.name] = np.full(shape, "", dtype=object)
            else:
                feed[meta.name] = np.zeros(shape, dtype=dtype)
        return feed


def load_model(path: str, name: str, version: str, config: SessionConfig) -> OnnxModel:
    """Load and warm up (one inference) the model; ModelLoadError with the reason if either fails."""
    session = build_session(path, config)
    model = OnnxModel(name, version, session)
    try:
        model.run(model.warm_up_feed())
    except Exception as exc:
        raise ModelLoadError(f"warm-up inference failed: {exc}") from exc
    log.info(
        "loaded model %s from %s: providers=%s session options: %s; inputs=[%s] outputs=[%s]",
        name,
        path,
        ",".join(model.providers),
        config.describe(),
        model.expected_inputs(),
        ", ".join(_describe(t) for t in model.outputs),
    )
    return model


def rows_of(feed: dict[str, np.ndarray]) -> int:
    """Batch rows of a feed: the first dimension all inputs share (InvalidInput if they disagree)."""
    rows = -1
    for name, array in feed.items():
        if array.ndim == 0:
            raise InvalidInput(f"input '{name}' is a scalar and cannot be batched")
        if rows == -1:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise InvalidInput(
                f"input '{name}': first dimension {array.shape[0]} differs from the other inputs' {rows}"
            )
    return max(rows, 0)


def element_count(shape: list[int]) -> int:
    return math.prod(shape)
