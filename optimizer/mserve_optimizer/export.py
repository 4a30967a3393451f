"""Torch sources: load a TorchScript file or a torch.export program, run it, export it to ONNX.

torch is imported here and only here, lazily: ONNX-only optimization must work in an image
without torch.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mserve_optimizer.errors import BadInputError
from mserve_optimizer.options import InputSpec

BATCH_AXIS_NAME = "batch"
# The batch size used to trace/export: not 1, which tracers may specialize away.
EXPORT_BATCH = 2
TORCHSCRIPT_OPSET = 17


def _import_torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise BadInputError(f"torch sources need torch (pip install 'mserve[optimizer]'): {exc}") from None
    return torch


@dataclass
class TorchModel:
    """A loaded torch source: a callable module plus how to export it."""

    format: str
    module: Any
    program: Any | None = None  # the ExportedProgram of a .pt2

    def run(self, feeds: dict[str, np.ndarray], specs: list[InputSpec]) -> list[np.ndarray]:
        torch = _import_torch()
        args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[spec.name])) for spec in specs)
        with torch.no_grad():
            result = self.module(*args)
        return [t.detach().cpu().numpy() for t in _flatten(result)]


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [t for item in value for t in _flatten(item)]
    if isinstance(value, dict):
        return [t for key in value for t in _flatten(value[key])]
    return [value]


def load_torch(path: Path, fmt: str) -> TorchModel:
    torch = _import_torch()
    try:
        if fmt == "torchscript":
            module = torch.jit.load(str(path), map_location="cpu")
            module.eval()
            return TorchModel(fmt, module)
        program = torch.export.load(str(path))
        return TorchModel(fmt, program.module(), program)
    except Exception as exc:
        raise BadInputError(
            f"{path.name}: cannot load as {fmt}: {type(exc).__name__}: {_first_line(exc)}"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def example_feeds(specs: list[InputSpec], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    from mserve_optimizer.samples import generate_samples

    return generate_samples(specs, batch, seed=seed)


def _program_batch_is_dynamic(program: Any, specs: list[InputSpec]) -> list[bool]:
    torch = _import_torch()
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    user_inputs = list(program.graph_signature.user_inputs)
    dynamic = []
    for name in user_inputs[: len(specs)]:
        value = placeholders[name].meta.get("val")
        shape = getattr(value, "shape", ())
        dynamic.append(bool(shape) and isinstance(shape[0], torch.SymInt))
    return dynamic


def export_onnx(model: TorchModel, specs: list[InputSpec], dest: Path) -> list[str]:
    """Write `model` as ONNX to `dest`, keeping axis 0 dynamic where the spec says -1.

    Returns the output names. TorchScript goes through the TorchScript exporter (the only
    one that takes a ScriptModule); a torch.export program through the dynamo exporter.
    """
    torch = _import_torch()
    if not specs:
        raise BadInputError("a torch source needs --input-shape NAME=DIMS[:DTYPE] for each input")
    feeds = example_feeds(specs, EXPORT_BATCH)
    outputs = model.run(feeds, specs)
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    args = tuple(torch.from_numpy(feeds[spec.name]) for spec in specs)
    input_names = [spec.name for spec in specs]
    dynamic_inputs = [spec.dims[0] == -1 for spec in specs]
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    # The exporters print progress and warnings meant for notebooks; the step log says enough.
    quiet = io.StringIO()
    try:
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if model.format == "torchscript":
                axes = _dynamic_axes(specs)
                if any(spec.dims[0] == -1 for spec in specs):
                    axes.update({name: {0: BATCH_AXIS_NAME} for name in output_names})
                torch.onnx.export(
                    model.module,
                    args,
                    str(dest),
                    dynamo=False,
                    input_names=input_names,
                    output_names=output_names,
                    dynamic_axes=axes or None,
                    opset_version=TORCHSCRIPT_OPSET,
                )
            else:
                program_dynamic = _program_batch_is_dynamic(model.program, specs)
                for spec, wanted, has in zip(specs, dynamic_inputs, program_dynamic, strict=False):
                    if wanted and not has:
                        raise BadInputError(
                            f"the torch.export program has a static batch axis for input {spec.name!r}; "
                            "re-export it with dynamic_shapes={...: {0: torch.export.Dim('batch')}} "
                            f"or give a fixed --input-shape {spec.name}=N,..."
                        )
                onnx_program = torch.onnx.export(
                    model.program,
                    args,
                    dynamo=True,
                    input_names=input_names,
                    output_names=output_names,
                    external_data=False,
                    verbose=False,
                )
                onnx_program.save(str(dest), external_data=False)
    except BadInputError:
        raise
    except Exception as exc:
        raise BadInputError(f"export to ONNX failed: {type(exc).__name__}: {_first_line(exc)}") from None
    _name_batch_axis(dest, input_names, dynamic_inputs)
    return output_names


def _dynamic_axes(specs: list[InputSpec]) -> dict[str, dict[int, str]]:
    """Every -1 axis stays dynamic: axis 0 is 'batch', others are named after input and axis."""
    axes = {
        spec.name: {
            i: BATCH_AXIS_NAME if i == 0 else f"{spec.name}_{i}" for i, d in enumerate(spec.dims) if d == -1
        }
        for spec in specs
    }
    return {name: dims for name, dims in axes.items() if dims}


def _name_batch_axis(path: Path, input_names: list[str], dynamic_inputs: list[bool]) -> None:
    """Give the batch axis one readable name ('batch') instead of the exporter's symbol (s77)."""
    import onnx

    model = onnx.load(str(path))
    symbols = set()
    for value in model.graph.input:
        if value.name in input_names and dynamic_inputs[input_names.index(value.name)]:
            dims = value.type.tensor_type.shape.dim
            if dims and dims[0].dim_param:
                symbols.add(dims[0].dim_param)
    if not symbols - {BATCH_AXIS_NAME}:
        return
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in symbols:
                dim.dim_param = BATCH_AXIS_NAME
    onnx.save(model, str(path))
