"""What the user asked for: input specs, tolerances and the normalized options that name an artifact."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mserve_optimizer.errors import BadInputError

QUANTIZE_MODES = ("none", "auto", "dynamic-int8", "static-int8", "fp16")
# Modes that name one technique: the ones a slower-than-the-original result is reported for.
EXPLICIT_MODES = ("dynamic-int8", "static-int8", "fp16")
DEVICES = ("cpu", "cuda")
FORMATS = ("auto", "onnx", "torchscript", "torch-export")
GRAPH_LEVELS = ("basic", "extended", "all")
PRUNE_STRUCTURES = ("unstructured", "structured")
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")
TOLERANCE_KEYS = ("max_abs", "mean_rel", "cosine", "cosine_min", "top1")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")


@dataclass(frozen=True)
class InputSpec:
    """One model input: its name, dims and dtype.

    -1 on the first axis is the dynamic batch axis; -1 elsewhere (a sequence length) is
    dynamic too, and generated samples give it `samples.DYNAMIC_AXIS_SIZE`.
    """

    name: str
    dims: tuple[int, ...]
    dtype: str = "float32"

    def text(self) -> str:
        return f"{self.name}={','.join(map(str, self.dims))}:{self.dtype}"


def parse_input_shape(text: str) -> InputSpec:
    """Parse `name=-1,64` or `name=-1,64:float32`."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not name or not _NAME.match(name):
        raise BadInputError(f"--input-shape {text!r}: expected NAME=DIMS[:DTYPE], e.g. x=-1,64:float32")
    dims_text, _, dtype = rest.partition(":")
    dtype = dtype.strip() or "float32"
    if dtype not in DTYPES:
        raise BadInputError(f"--input-shape {text!r}: unknown dtype {dtype!r} (one of {', '.join(DTYPES)})")
    try:
        dims = tuple(int(d) for d in dims_text.split(",") if d.strip())
    except ValueError:
        raise BadInputError(f"--input-shape {text!r}: dims must be integers, -1 for the batch axis") from None
    if not dims or any(d == 0 or d < -1 for d in dims):
        raise BadInputError(f"--input-shape {text!r}: dims must be positive integers or -1")
    return InputSpec(name, dims, dtype)


def parse_tolerance(text: str) -> tuple[str, float]:
    """Parse `cosine=0.995`; keys are the validation figures' names."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or key not in TOLERANCE_KEYS:
        raise BadInputError(
            f"--tolerance {text!r}: expected KEY=VALUE with KEY one of {', '.join(TOLERANCE_KEYS)}"
        )
    try:
        number = float(value)
    except ValueError:
        raise BadInputError(f"--tolerance {text!r}: {value!r} is not a number") from None
    if number != number or number < 0:
        raise BadInputError(f"--tolerance {text!r}: must be a non-negative number")
    return key, number


@dataclass(frozen=True)
class OptimizeOptions:
    """Everything that changes the artifact; `normalized()` feeds the digest."""

    format: str = "auto"
    quantize: str = "none"
    prune: float = 0.0
    prune_structure: str = "unstructured"
    graph_level: str = "basic"
    inputs: tuple[InputSpec, ...] = ()
    tolerances: tuple[tuple[str, float], ...] = ()
    calibration_sha256: str | None = None
    samples_sha256: str | None = None
    latency_batch: int = 32
    device: str = "cpu"  # where the artifact will be served: cuda adds FP16 to `auto`, runs on CUDA
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.quantize not in QUANTIZE_MODES:
            raise BadInputError(
                f"unknown quantization mode {self.quantize!r} (one of {', '.join(QUANTIZE_MODES)})"
            )
        if self.format not in FORMATS:
            raise BadInputError(f"unknown format {self.format!r} (one of {', '.join(FORMATS)})")
        if self.graph_level not in GRAPH_LEVELS:
            raise BadInputError(
                f"unknown graph level {self.graph_level!r} (one of {', '.join(GRAPH_LEVELS)})"
            )
        if self.prune_structure not in PRUNE_STRUCTURES:
            raise BadInputError(f"unknown prune structure {self.prune_structure!r}")
        if not 0.0 <= self.prune < 1.0:
            raise BadInputError(f"--prune {self.prune}: must be a fraction in [0, 1)")
        if self.device not in DEVICES:
            raise BadInputError(f"unknown device {self.device!r} (one of {', '.join(DEVICES)})")
        if self.latency_batch < 1:
            raise BadInputError("--latency-batch must be at least 1")
        names = [spec.name for spec in self.inputs]
        if len(set(names)) != len(names):
            raise BadInputError(f"--input-shape names an input twice: {', '.join(names)}")

    @property
    def tolerance_overrides(self) -> dict[str, float]:
        return dict(self.tolerances)

    def normalized(self) -> dict[str, object]:
        """A canonical, JSON-ready form: same request, same dict, whatever the flag order."""
        normal: dict[str, object] = {
            "format": self.format,
            "quantize": self.quantize,
            "prune": round(self.prune, 6),
            "prune_structure": self.prune_structure if self.prune else "unstructured",
            "graph_level": self.graph_level,
            "inputs": sorted(spec.text() for spec in self.inputs),
            "tolerances": {key: value for key, value in sorted(self.tolerances)},
            "calibration_sha256": self.calibration_sha256,
            "samples_sha256": self.samples_sha256,
            "latency_batch": self.latency_batch,
        }
        if self.device != "cpu":  # absent on CPU, so that CPU artifacts keep their digests
            normal["device"] = self.device
        return normal
