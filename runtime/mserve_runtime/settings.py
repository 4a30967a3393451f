"""Runtime settings: one object, read from `MSERVE_*` environment variables and CLI flags."""

from __future__ import annotations

from typing import Literal

from mserve_contract.optimization_report import SessionOptions
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    @field_validator("latency_tolerance")
    @classmethod
    def _tolerance_off_or_at_least_one(cls, value: float) -> float:
        if 0 < value < 1:
            raise ValueError(
                f"latency_tolerance must be 0 (off) or at least 1 (a multiple of the fastest run), "
                f"got {value}"
            )
        return value
