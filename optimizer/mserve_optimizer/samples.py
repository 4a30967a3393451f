"""Input data for validation and calibration: the model's input specs, given samples or generated ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from mserve_optimizer.errors import BadInputError
from mserve_optimizer.options import InputSpec

GENERATED_SEED = 20261125
GENERATED_COUNT = 64
# Generated samples give a dynamic non-batch axis (a sequence length) this size.
DYNAMIC_AXIS_SIZE = 16

_ONNX_DTYPES = {
    1: "float32",
    2: "uint8",
    3: "int8",
    6: "int32",
    7: "int64",
    9: "bool",
    10: "float16",
    11: "float64",
}


def onnx_input_specs(model, given: list[InputSpec]) -> list[InputSpec]:  # model: onnx.ModelProto
    """The model's inputs, in graph order, with the user's `--input-shape` taking precedence."""
    by_name = {spec.name: spec for spec in given}
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [value for value in model.graph.input if value.name not in initializers]
    unknown = set(by_name) - {value.name for value in graph_inputs}
    if unknown:
        names = ", ".join(value.name for value in graph_inputs)
        raise BadInputError(
            f"--input-shape names {', '.join(sorted(unknown))}, but the model's inputs are {names}"
        )
    specs = []
    for value in graph_inputs:
        if value.name in by_name:
            specs.append(by_name[value.name])
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise BadInputError(f"input {value.name!r} has an unsupported element type {tensor.elem_type}")
        dims = []
        for axis, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(dim.dim_value)
            elif axis == 0:
                dims.append(-1)
            else:
                raise BadInputError(
                    f"input {value.name!r} has a symbolic axis {axis} ({dim.dim_param or '?'}); "
                    f"give its size with --input-shape {value.name}=-1,..."
                )
        specs.append(InputSpec(value.name, tuple(dims), dtype))
    return specs


def _concrete(dims: tuple[int, ...], batch: int) -> tuple[int, ...]:
    rest = tuple(DYNAMIC_AXIS_SIZE if d == -1 else d for d in dims[1:])
    return (batch if dims[0] == -1 else dims[0], *rest)


def _fits(shape: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    return len(shape) == len(dims) and all(d in (-1, n) for n, d in zip(shape, dims, strict=True))


def generate_samples(
    specs: list[InputSpec], count: int, *, seed: int = GENERATED_SEED
) -> dict[str, np.ndarray]:
    """Deterministic synthetic inputs: floats uniform in [0, 1), token-like integers, all-ones masks.

    Integer inputs named like masks get ones and like type ids get zeros, because random
    values there would index past small embedding tables.
    """
    rng = np.random.default_rng(seed)
    samples = {}
    for spec in specs:
        batch = count if spec.dims[0] == -1 else spec.dims[0]
        shape = _concrete(spec.dims, batch)
        lowered = spec.name.lower()
        if spec.dtype.startswith("float"):
            samples[spec.name] = rng.random(shape, dtype=np.float64).astype(spec.dtype)
        elif spec.dtype == "bool":
            samples[spec.name] = np.ones(shape, dtype=bool)
        elif "mask" in lowered:
            samples[spec.name] = np.ones(shape, dtype=spec.dtype)
        elif "type" in lowered or "segment" in lowered or "position" in lowered:
            samples[spec.name] = np.zeros(shape, dtype=spec.dtype)
        else:
            high = 100 if spec.dtype in ("int8", "uint8") else 1000
            samples[spec.name] = rng.integers(0, high, shape).astype(spec.dtype)
    return samples


def load_samples(path: Path, specs: list[InputSpec], label: str = "--samples") -> dict[str, np.ndarray]:
    """An .npz with one array per input name, samples along axis 0."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, AttributeError):
        raise BadInputError(f"{label} {path}: not an .npz of numeric arrays (np.savez)") from None
    samples = {}
    counts = set()
    for spec in specs:
        if spec.name not in data:
            raise BadInputError(
                f"{label} {path}: no array named {spec.name!r} (holds {', '.join(sorted(data)) or 'nothing'})"
            )
        array = data[spec.name]
        if not _fits(array.shape, spec.dims):
            raise BadInputError(
                f"{label} {path}: {spec.name!r} has shape {array.shape}, the model expects {spec.dims}"
            )
        samples[spec.name] = array.astype(spec.dtype, copy=False)
        counts.add(array.shape[0])
    if len(counts) > 1:
        raise BadInputError(f"{label} {path}: inputs hold different numbers of samples: {sorted(counts)}")
    if not counts or 0 in counts:
        raise BadInputError(f"{label} {path}: holds no samples")
    return samples


def sample_count(samples: dict[str, np.ndarray]) -> int:
    return min(array.shape[0] for array in samples.values())


def iter_batches(
    samples: dict[str, np.ndarray], size: int, specs: list[InputSpec]
) -> Iterator[dict[str, np.ndarray]]:
    """Feeds of up to `size` samples; inputs with a fixed batch axis are fed whole."""
    total = sample_count(samples)
    fixed = {spec.name for spec in specs if spec.dims[0] != -1}
    if fixed:
        yield samples
        return
    for start in range(0, total, size):
        yield {name: array[start : start + size] for name, array in samples.items()}


def batch_of(samples: dict[str, np.ndarray], batch: int, specs: list[InputSpec]) -> dict[str, np.ndarray]:
    """A feed of exactly `batch` samples (repeating them if there are fewer), for latency runs."""
    feeds = {}
    for spec in specs:
        array = samples[spec.name]
        if spec.dims[0] != -1:
            feeds[spec.name] = array
            continue
        reps = -(-batch // array.shape[0])
        feeds[spec.name] = (
            np.ascontiguousarray(np.concatenate([array] * reps)[:batch]) if reps > 1 else array[:batch]
        )
    return feeds
