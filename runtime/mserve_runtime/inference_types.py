"""Internal, protocol-agnostic inference types (numpy tensors, not wire models).

REST and gRPC adapters decode their wire formats into these and encode responses from
them; the data plane and the model only ever see these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class InputTensor:
    """One input: `data` is already shaped to `shape` and typed to `datatype`."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; `binary_data` None means "the request's default"."""

    name: str
    binary_data: bool | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class InferenceRequest:
    """A decoded inference request; `outputs` None means every model output."""

    id: str | None
    inputs: list[InputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None


@dataclass(slots=True)
class OutputTensor:
    """One output as the model produced it."""

    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


@dataclass(slots=True)
class InferenceResponse:
    """The model's answer to one InferenceRequest (`id` echoed)."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: list[OutputTensor]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class TensorMetadata:
    """Name, V2 datatype and shape (-1 for a dynamic dimension) of a model input or output."""

    name: str
    datatype: str
    shape: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(slots=True, frozen=True)
class ModelMetadata:
    """What `GET /v2/models/{name}` answers."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": list(self.versions),
            "platform": self.platform,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
        }


@dataclass(slots=True, frozen=True)
class ServerMetadata:
    """What `GET /v2` answers."""

    name: str
    version: str
    extensions: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "extensions": list(self.extensions)}
