"""The ModelService spec as typed objects, with the defaults the CRD documents.

The CRD's schema and CEL rules refuse invalid specs at admission; parsing here only gives
the builders typed fields. A spec that still fails to parse (an older CRD installed) is a
permanent error for that generation.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
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


class Tls(_Spec):
    secret_name: str


class Serving(_Spec):
    replicas: int | None = None
    autoscaling: Autoscaling | None = None
    resources: Resources = Resources()
    gpu: Gpu = Gpu()
    batching: Batching = Batching()
    threads: int = 0
    image: str = ""
    tls: Tls | None = None
    pool: str = ""  # a ModelPool's name: served by its pods, no Deployment of its own

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


# The same forms the CRD's CEL rules accept: a namespace, "/", a ServiceAccount name or "*".
_SERVICE_ACCOUNT = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/(\*|[a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")


class RateLimit(_Spec):
    requests_per_second: float = Field(0.0, ge=0)
    burst: int | None = Field(None, ge=1)

    @property
    def effective_burst(self) -> int:
        """The burst the runtime gets: the spec's, else one second's worth of requests."""
        return self.burst if self.burst is not None else max(1, int(-(-self.requests_per_second // 1)))


class LabelSelectorRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(_Spec):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def to_manifest(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)


class Access(_Spec):
    authentication: Literal["none", "apiKey", "kubernetes"] = "none"
    api_key_secrets: tuple[str, ...] = ()
    allowed_service_accounts: tuple[str, ...] = ()
    allowed_namespaces: tuple[str, ...] = ()  # empty: the ModelService's own namespace
    allowed_pod_selector: LabelSelector | None = None
    rate_limit: RateLimit = RateLimit()

    @field_validator("allowed_service_accounts")
    @classmethod
    def _namespace_slash_name(cls, accounts: tuple[str, ...]) -> tuple[str, ...]:
        for account in accounts:
            if not _SERVICE_ACCOUNT.match(account):
                raise ValueError(f"{account!r} must be <namespace>/<serviceaccount> or <namespace>/*")
        return accounts

    @model_validator(mode="after")
    def _credentials_match_authentication(self) -> Access:
        if self.authentication == "apiKey" and not self.api_key_secrets:
            raise ValueError("apiKeySecrets must name at least one Secret when authentication is apiKey")
        if self.authentication == "kubernetes" and not self.allowed_service_accounts:
            raise ValueError(
                "allowedServiceAccounts must name at least one ServiceAccount "
                "when authentication is kubernetes"
            )
        # A careless spec, not a harmless one: the owner believes the keys protect the model.
        if self.api_key_secrets and self.authentication != "apiKey":
            raise ValueError("apiKeySecrets is set but authentication is not apiKey")
        if self.allowed_service_accounts and self.authentication != "kubernetes":
            raise ValueError("allowedServiceAccounts is set but authentication is not kubernetes")
        return self

    def namespaces(self, own: str) -> tuple[str, ...]:
        return self.allowed_namespaces or (own,)


# A step's pause: whole seconds, minutes or hours ("30s", "2m", "1h"); at most MAX_PAUSE_SECONDS.
_DURATION = re.compile(r"^([0-9]{1,5})(s|m|h)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}
MAX_PAUSE_SECONDS = 24 * 3600
MAX_CANARY_STEPS = 10


def duration_seconds(text: str) -> int:
    """Seconds of a pause string; ValueError naming the accepted forms otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 2m or 1h")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_PAUSE_SECONDS:
        raise ValueError(f"{text!r} is longer than {MAX_PAUSE_SECONDS // 3600}h")
    return seconds


class CanaryStep(_Spec):
    weight: int = Field(ge=1, le=100)
    pause: str = "30s"

    @field_validator("pause")
    @classmethod
    def _duration(cls, pause: str) -> str:
        duration_seconds(pause)
        return pause

    @property
    def pause_seconds(self) -> int:
        return duration_seconds(self.pause)


class CanaryGates(_Spec):
    max_error_rate: float = Field(0.01, ge=0, le=1)
    max_latency_ratio: float = Field(1.5, ge=1, le=100)
    # Tiny models answer in a millisecond or two and the runtime's latency buckets step by 2-2.5x
    # there: a ratio alone would fail a canary for one bucket of noise. Within this much of the
    # stable's p99 the canary passes whatever the ratio.
    latency_slack_ms: float = Field(25.0, ge=0, le=60000)
    min_agreement: float = Field(0.95, ge=0, le=1)
    min_comparisons: int = Field(50, ge=1, le=1_000_000)


_DEFAULT_STEPS = (CanaryStep(weight=10, pause="30s"), CanaryStep(weight=50, pause="30s"))


class Rollout(_Spec):
    strategy: Literal["Rolling", "Canary"] = "Rolling"
    steps: tuple[CanaryStep, ...] = Field(_DEFAULT_STEPS, min_length=1, max_length=MAX_CANARY_STEPS)
    mirror_percent: float = Field(20.0, ge=0, le=100)
    gates: CanaryGates = CanaryGates()

    @property
    def canary(self) -> bool:
        return self.strategy == "Canary"


class ModelServiceSpec(_Spec):
    model: ModelSource
    optimization: Optimization = Optimization()
    serving: Serving = Serving()
    artifact_store: ArtifactStore = ArtifactStore()
    access: Access = Access()
    rollout: Rollout = Rollout()

    @model_validator(mode="after")
    def _pool_members_share_the_pools_endpoint(self) -> ModelServiceSpec:
        if self.serving.pool and (self.serving.tls is not None or self.access.authentication != "none"):
            raise ValueError(
                "spec.serving.pool: a pool member cannot set spec.serving.tls or spec.access.authentication "
                "(the pool's pods serve every member with one configuration)"
            )
        return self

    @model_validator(mode="after")
    def _canary_needs_a_dedicated_plain_http_deployment(self) -> ModelServiceSpec:
        if not self.rollout.canary:
            return self
        if self.serving.pool:
            raise ValueError(
                "spec.rollout.strategy: Canary cannot be used with spec.serving.pool "
                "(a pool's pods serve many models; the split lives in a dedicated Deployment's pods)"
            )
        if self.serving.tls is not None:
            raise ValueError(
                "spec.rollout.strategy: Canary cannot be used with spec.serving.tls "
                "(the stable pods forward to the canary over plain HTTP)"
            )
        return self

    @property
    def secrets_to_mount(self) -> tuple[tuple[str, str], ...]:
        """(field, Secret name) of every Secret the runtime pods mount, for the existence check."""
        named = [(f"spec.access.apiKeySecrets[{i}]", s) for i, s in enumerate(self.access.api_key_secrets)]
        if self.serving.tls is not None:
            named.append(("spec.serving.tls.secretName", self.serving.tls.secret_name))
        return tuple(named)

    @property
    def skips_optimization(self) -> bool:
        """An ONNX source with nothing to change is served as it is, without a Job."""
        opt = self.optimization
        return self.model.is_onnx and opt.quantize == "none" and opt.prune == 0.0


def parse_spec(spec: dict) -> ModelServiceSpec:
    return ModelServiceSpec.model_validate(spec)
