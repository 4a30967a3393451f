"""The ModelService spec as typed objects, with the defaults the CRD documents.

The CRD's schema and CEL rules refuse invalid specs at admission; parsing here only gives
the builders typed fields. A spec that still fails to parse (an older CRD installed) is a
permanent error for that generation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

API_GROUP = "mserve.io"
API_VERSION = "v1alpha1"
KIND = "ModelService"
PLURAL = "modelservices"

TORCH_FORMATS = ("torchscript", "torch-export")
TORCH_SUFFIXES = (".pt", ".pt2", ".pth")


class _Spec(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class TensorInput(_Spec):
    name: str
    shape: tuple[int, ...]
    datatype: str = "FP32"


class ModelSource(_Spec):
    uri: str
    format: Literal["auto", "onnx", "torchscript", "torch-export"] = "auto"
    sha256: str = ""
    credentials_secret: str = ""
    inputs: tuple[TensorInput, ...] = ()

    @property
    def is_onnx(self) -> bool:
        return self.format == "onnx" or (self.format == "auto" and self.uri.lower().endswith(".onnx"))


class Tolerance(_Spec):
    cosine: float | None = None
    top1_agreement: float | None = None
    max_abs_error: float | None = None
    mean_rel_error: float | None = None


class Optimization(_Spec):
    quantize: Literal["none", "auto", "dynamic-int8", "static-int8", "fp16"] = "auto"
    prune: float = 0.0
    tolerance: Tolerance = Tolerance()


class Autoscaling(_Spec):
    min_replicas: int = 1
    max_replicas: int = 5
    target_cpu_utilization_percentage: int = Field(70, alias="targetCPUUtilizationPercentage")


class Resources(_Spec):
    requests: dict[str, str | int] = Field(default_factory=dict)
    limits: dict[str, str | int] = Field(default_factory=dict)


class Toleration(_Spec):
    key: str = ""
    operator: str = ""
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


class Gpu(_Spec):
    count: int = 0
    resource_name: str | None = None  # unset: the install's default (OperatorSettings)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: tuple[Toleration, ...] = ()


class Batching(_Spec):
    max_batch_size: int = 32
    max_delay_ms: float = 2.0


class Serving(_Spec):
    replicas: int | None = None
    autoscaling: Autoscaling | None = None
    resources: Resources = Resources()
    gpu: Gpu = Gpu()
    batching: Batching = Batching()
    threads: int = 0
    image: str = ""

    @property
    def uses_gpu(self) -> bool:
        return self.gpu.count > 0

    @property
    def min_replicas(self) -> int:
        if self.autoscaling is not None:
            return self.autoscaling.min_replicas
        return 1 if self.replicas is None else self.replicas


class ArtifactStore(_Spec):
    uri: str = ""
    endpoint: str = ""
    credentials_secret: str = ""


class ModelServiceSpec(_Spec):
    model: ModelSource
    optimization: Optimization = Optimization()
    serving: Serving = Serving()
    artifact_store: ArtifactStore = ArtifactStore()

    @property
    def skips_optimization(self) -> bool:
        """An ONNX source with nothing to change is served as it is, without a Job."""
        opt = self.optimization
        return self.model.is_onnx and opt.quantize == "none" and opt.prune == 0.0


def parse_spec(spec: dict) -> ModelServiceSpec:
    return ModelServiceSpec.model_validate(spec)
