"""Runtime settings: one object, read from `MSERVE_*` environment variables and CLI flags."""

from __future__ import annotations

import os
import re
from typing import Literal, Self

from mserve_contract.optimization_report import SessionOptions
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# `namespace/name` or `namespace/*`: a DNS label, then a DNS subdomain (a ServiceAccount's name).
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/(\*|[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)")


def parse_service_accounts(text: str) -> tuple[str, ...]:
    """`MSERVE_ALLOWED_SERVICE_ACCOUNTS` as its entries; ValueError naming a malformed one."""
    entries = tuple(part.strip() for part in text.split(",") if part.strip())
    for entry in entries:
        if not _SERVICE_ACCOUNT.fullmatch(entry):
            shown = entry if len(entry) <= 80 else entry[:80] + "..."
            raise ValueError(f"{shown!r} is not 'namespace/name' or 'namespace/*' (lower-case DNS names)")
    return entries


class RuntimeSettings(BaseSettings):
    """How `mserve serve` loads and serves one ONNX model.

    The operator passes these through the pod spec as `MSERVE_<FIELD>` variables; the CLI
    flags of `mserve serve` override them.
    """

    model_config = SettingsConfigDict(env_prefix="MSERVE_", extra="ignore", protected_namespaces=())

    model_path: str = ""
    """Path of the ONNX file to serve."""

    model_name: str = "model"
    """Name the model is served under (`/v2/models/{model_name}`)."""

    model_version: str = "1"
    """The one version this server answers for in `/versions/{v}` routes."""

    host: str = "0.0.0.0"
    """Address the HTTP and gRPC servers bind to."""

    http_port: int = Field(8080, ge=0, le=65535)
    """Port of the REST (V2 + V1) server."""

    grpc_port: int = Field(8081, ge=0, le=65535)
    """Port of the V2 gRPC server; 0 disables it."""

    max_batch_size: int = Field(1, ge=1)
    """Largest number of rows merged into one model run; 1 turns dynamic batching off."""

    max_batch_delay_ms: float = Field(2.0, ge=0)
    """Longest time a request waits for others to join its batch."""

    threads: int = Field(0, ge=0)
    """onnxruntime intra-op threads; 0 derives them from the cgroup CPU limit."""

    session_options: SessionOptions | None = None
    """onnxruntime execution settings as JSON, e.g. `{"intra_op_threads": 1, "allow_spinning": false}`:
    what the optimizer measured fastest for this model (the operator passes its report's choice);
    unset, the defaults of `SessionOptions`. Unknown keys and out-of-range values stop start-up."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Execution provider: `cuda` needs onnxruntime-gpu and a visible GPU, or start-up fails."""

    json_logs: bool = False
    """Write logs (including access logs) as one JSON object per line."""

    admin_port: int = Field(8082, ge=0, le=65535)
    """Port of `/metrics`, `/openapi.json`, `/docs` and the health routes: plaintext, no
    authentication (the metrics scraper reaches it); 0 picks a free one."""

    docs_ui: bool = True
    """Serve the docs UI (`/docs`) on the admin port; the OpenAPI document stays."""

    # -- access control (access.py): authentication, rate limits, TLS --

    auth: Literal["none", "apiKey", "kubernetes"] = "none"
    """Who may call: `none`; `apiKey` (keys under `api_keys_dir`); `kubernetes` (ServiceAccount
    tokens checked with a TokenReview, callers in `allowed_service_accounts`)."""

    api_keys_dir: str = "/var/run/mserve/api-keys"
    """One subdirectory per mounted Secret; each file in it is one key named `<secret>/<file>`."""

    allowed_service_accounts: str = ""
    """Comma-separated `namespace/name` or `namespace/*` admitted in `kubernetes` mode."""

    token_audience: str = Field("mserve", min_length=1, max_length=253)
    """The audience a caller's ServiceAccount token must be bound to."""

    kube_api_url: str = ""
    """The Kubernetes API server; unset: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`."""

    kube_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    """The runtime's own credential for its TokenReviews (re-read as the kubelet rotates it)."""

    kube_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    """CA bundle that verifies the API server."""

    rate_limit_rps: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    """Requests per second per caller (API key, ServiceAccount or `anonymous`); 0 = no limit."""

    rate_limit_burst: int = Field(0, ge=0, le=1_000_000_000)
    """Requests a caller may send at once above its rate; 0 = the rate rounded up (at least 1)."""

    tls_cert_file: str = ""
    """PEM certificate chain: REST and gRPC serve TLS (re-read when the file changes)."""

    tls_key_file: str = ""
    """PEM private key of `tls_cert_file`; both or neither."""

    access_log: bool = True
    """Log one line per HTTP request."""

    log_level: str = "info"
    """Python logging level name (debug, info, warning, error)."""

    drain_delay_s: float = Field(0.0, ge=0)
    """On SIGTERM, how long to keep accepting requests while not ready, so that endpoints
    controllers stop routing here before the listener closes (0 closes it at once)."""

    drain_timeout_s: float = Field(30.0, ge=0)
    """On SIGTERM, how long in-flight requests may take to finish before the process exits."""

    # -- request limits: derived from the pod's memory limit (request_limits.py) unless set --

    memory_limit_bytes: int = Field(0, ge=0)
    """Memory the request limits are derived from; 0 reads the cgroup limit (v2 `memory.max`,
    v1 `memory.limit_in_bytes`), else the machine's RAM."""

    max_request_bytes: int | None = Field(None, ge=1)
    """Largest request body (binary tensors included, after gzip/deflate); larger gets 413.
    Unset: a quarter of the memory over 2, at most 64 MiB."""

    max_json_bytes: int | None = Field(None, ge=1)
    """Largest JSON part of a request body; larger gets 413. Unset: a quarter of the memory over 16."""

    max_elements: int | None = Field(None, ge=1)
    """Most tensor elements across the inputs of one request; more gets 400. Unset: a quarter
    of the memory over 64 bytes."""

    # -- load shedding and deadlines (admission.py) --

    max_in_flight: int = Field(0, ge=0)
    """Most inference requests the server holds at once (being read, queued or run); one more
    gets 503 with `Retry-After` (gRPC UNAVAILABLE) at once, without queueing. 0 derives it:
    two full batches per inference worker, at least 32."""

    max_queue_delay_ms: float = Field(100.0, ge=0, le=99_999_999, allow_inf_nan=False)
    """Past one full batch per inference worker in flight (at least 32 requests), refuse more
    with 503 (gRPC UNAVAILABLE) while the latest model run to start had waited longer than this
    (plus `max_batch_delay_ms`) in the queue: admitted requests then wait about this long,
    not as long as `max_in_flight` requests take. 0 turns it off (the count alone bounds)."""

    latency_tolerance: float = Field(0.0, ge=0, le=1000, allow_inf_nan=False)
    """Adaptive limit on requests in flight (at most `max_in_flight`, at least two per inference
    worker): every 0.1 s it shrinks while model runs, counted from their oldest request's arrival,
    take longer than this multiple of the fastest recent run plus `latency_slack_ms` and the
    batching delay, and grows back while they do not. 0 turns it off (the default: where the
    pod's cores are shared, run times follow the neighbours and it sheds load the server could
    serve, see docs/runtime.md); otherwise at least 1."""

    latency_slack_ms: float = Field(5.0, ge=0, le=99_999_999, allow_inf_nan=False)
    """What `latency_tolerance` allows on top of its multiple, so that a model whose runs take
    microseconds is not held to microseconds of queue."""

    request_timeout_s: float = Field(60.0, gt=0, le=99_999.999)
    """Deadline of an inference request, counted from its arrival: a request still queued then
    gets 504 (gRPC DEADLINE_EXCEEDED) and its work is dropped. A client may ask for less with the
    `Inference-Timeout-Ms` header or its gRPC deadline, never for more."""

    # -- canary rollouts (canary_forward.py) --

    rollout_file: str = Field("", max_length=4096)
    """The rollout file the operator mounts during a canary rollout (JSON: the canary's URL, its
    weight and mirror share); re-read every second. Unset, or the file missing or empty: no
    canary, and the inference routes are not wrapped at all."""

    shadow_max_in_flight: int = Field(4, ge=1, le=1024)
    """Mirrored requests (shadow comparison with the canary) in flight at most; a request due
    for mirroring beyond that is not mirrored (counted in `mserve_shadow_dropped_total`)."""

    @field_validator("rollout_file")
    @classmethod
    def _rollout_file(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("must be a file path (it holds a NUL character)")
        if value and os.path.isdir(value):
            raise ValueError("is a directory; give the file in it (e.g. /etc/mserve/rollout/rollout.json)")
        return value

    @field_validator("allowed_service_accounts")
    @classmethod
    def _service_accounts(cls, value: str) -> str:
        parse_service_accounts(value)
        return value

    @field_validator("kube_api_url")
    @classmethod
    def _kube_api_url(cls, value: str) -> str:
        if value and not value.startswith(("https://", "http://")):
            raise ValueError(f"must start with https:// (received {value[:80]!r})")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("MSERVE_TLS_CERT_FILE and MSERVE_TLS_KEY_FILE must be set together (or neither)")
        return self

    @field_validator("latency_tolerance")
    @classmethod
    def _tolerance_off_or_at_least_one(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError(
                f"latency_tolerance must be 0 (off) or at least 1 (a multiple of the fastest run), "
                f"got {value}"
            )
        return value
