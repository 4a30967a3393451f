"""How many elements a model's outputs will hold for a request, known before it runs.

The per-request limits (request_limits.py) bound what a request carries in; a model's outputs
can be far larger than its inputs (an embedding turns `[1, n]` ids into `[1, n, width]`
floats). ONNX names its dynamic dimensions (`batch`, `tokens`): a dimension an output shares by
name with an input takes the request's size for it, so the outputs' sizes follow from the
request's shapes. An output with a dimension no input names (computed by the graph: NonZero,
a Reshape to a size read from the data) is left out: the estimate is then a lower bound, and a
request is refused only when even that is over the limit. Activations inside the graph are not
estimated at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mserve_runtime.errors import InvalidInput

Dim = int | str | None


def _dims(shape: Any) -> tuple[Dim, ...]:
    return tuple(shape) if isinstance(shape, list | tuple) else ()


@dataclass(frozen=True, slots=True)
class OutputBound:
    """A model's input and output shapes as onnxruntime reports them (symbolic names kept)."""

    inputs: dict[str, tuple[Dim, ...]]
    outputs: dict[str, tuple[Dim, ...]]

    @classmethod
    def of(cls, session: Any) -> OutputBound:
        """From an onnxruntime InferenceSession (or anything with `get_inputs`/`get_outputs`)."""
        return cls(
            {i.name: _dims(i.shape) for i in session.get_inputs()},
            {o.name: _dims(o.shape) for o in session.get_outputs()},
        )

    def elements(self, shapes: dict[str, Sequence[int]]) -> dict[str, int]:
        """Each output's element count for inputs of `shapes`, for the outputs whose every
        dimension is fixed or named by an input."""
        sizes: dict[str, int] = {}
        for name, dims in self.inputs.items():
            shape = shapes.get(name)
            if shape is None or len(shape) != len(dims):
                continue
            for dim, size in zip(dims, shape, strict=True):
                if isinstance(dim, str):
                    sizes[dim] = max(sizes.get(dim, 0), size)
        counts = {}
        for name, dims in self.outputs.items():
            known = [
                d if isinstance(d, int) and d >= 0 else sizes.get(d) if isinstance(d, str) else None
                for d in dims
            ]
            if all(k is not None for k in known):
                counts[name] = math.prod(known)  # type: ignore[arg-type]
        return counts

    def check(self, model: str, shapes: dict[str, Sequence[int]], max_elements: int) -> None:
        """InvalidInput naming the model, its largest output and the setting when the outputs
        for inputs of `shapes` would hold more than `max_elements` (what one request may carry in)."""
        counts = self.elements(shapes)
        total = sum(counts.values())
        if total > max_elements:
            largest = max(counts, key=lambda name: counts[name])
            raise InvalidInput(
                f"model '{model}': the outputs for these inputs would hold {total} elements "
                f"(output '{largest}': {counts[largest]}), more than the {max_elements} one request "
                "may (MSERVE_MAX_ELEMENTS); send fewer rows or shorter inputs"
            )
