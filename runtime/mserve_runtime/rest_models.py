"""Wire models of the REST API, for the OpenAPI document only.

The handlers do not build these (the infer path decodes with orjson by hand for speed);
they describe what goes over the wire so that clients and fuzzers can read the contract.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES",
]  # fmt: skip


class RequestInput(BaseModel):
    name: str
    shape: list[int] = Field(description="Dimensions, each >= 0.")
    datatype: Datatype
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_size` (bytes) marks an input carried in the binary part."
    )
    data: list[Any] | None = Field(None, description="Row-major elements, flat or nested.")


class RequestOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data`: return this output as binary."
    )


class InferenceRequestBody(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] | None = Field(
        None, description="`binary_data_output`: return every output as binary unless it says otherwise."
    )
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: Datatype
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferenceResponseBody(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]


class TensorMetadataBody(BaseModel):
    name: str
    datatype: Datatype
    shape: list[int]


class ModelMetadataBody(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadataBody]
    outputs: list[TensorMetadataBody]


class ServerMetadataBody(BaseModel):
    name: str
    version: str
    extensions: list[str]


class LiveBody(BaseModel):
    live: bool


class ReadyBody(BaseModel):
    ready: bool


class ModelReadyBody(BaseModel):
    name: str
    ready: bool


class ErrorBody(BaseModel):
    error: str


class V1PredictRequest(BaseModel):
    instances: list[Any]


class V1PredictResponse(BaseModel):
    predictions: list[Any]


class V1ModelStatus(BaseModel):
    name: str
    ready: bool


# Models referenced by `$ref` from hand-written request bodies; added to the document's components.
REQUEST_BODY_MODELS: list[type[BaseModel]] = [InferenceRequestBody, V1PredictRequest]
