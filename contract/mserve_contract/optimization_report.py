"""What `mserve optimize` proves about an optimized model, and the short form the operator reads.

`OptimizationReport` is written next to the artifact as `report.json`. `TerminationSummary`
is the part that fits in a pod's termination message (Kubernetes keeps at most 4 KiB), so
the operator learns the verdict without reaching the artifact store.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

Verdict = Literal["passed", "failed"]
QuantizeMode = Literal["none", "auto", "dynamic-int8", "static-int8", "fp16"]
ExecutionMode = Literal["sequential", "parallel"]
GraphLevel = Literal["disable", "basic", "extended", "all"]
MAX_THREADS = 1024

# Kubernetes truncates a termination message to 4096 bytes; stay clear of it.
TERMINATION_MESSAGE_LIMIT = 4000


class _Model(BaseModel):
    # NaN or infinite errors (a broken model) survive a JSON round trip as "NaN"/"Infinity".
    model_config = ConfigDict(extra="ignore", ser_json_inf_nan="strings")


class FileFacts(_Model):
    """Where a model file came from, and its bytes' digest."""

    uri: str = ""
    sha256: str
    size_bytes: int


class StepTiming(_Model):
    """One pipeline step (fetch, load, export, ...) and how long it took."""

    name: str
    seconds: float
    detail: str = ""


class OutputValidation(_Model):
    """How one output of the optimized model compares with the original on the samples."""

    name: str
    max_abs_error: float
    mean_rel_error: float = Field(description="sum |optimized - original| / sum |original| (relative L1).")
    cosine: float = Field(description="Mean over samples of the cosine between original and optimized rows.")
    cosine_min: float = Field(description="The worst sample's cosine.")
    top1_agreement: float | None = Field(
        default=None, description="Share of samples whose argmax agrees; only for classifier-shaped outputs."
    )
    thresholds: dict[str, float] = Field(default_factory=dict)
    passed: bool
    failures: list[str] = Field(default_factory=list, description="One line per missed threshold.")


class LatencyFigures(_Model):
    """Median latency in milliseconds of the original and optimized model, same machine, same threads."""

    batch_small: int = 1
    batch_large: int = 32
    original_ms_small: float
    optimized_ms_small: float
    original_ms_large: float
    optimized_ms_large: float
    ratio_small: float = Field(description="original / optimized at the small batch: > 1 means faster.")
    ratio_large: float = Field(description="original / optimized at the large batch: > 1 means faster.")
    threads: int = 0
    repeats: int = 0


class PruningFigures(_Model):
    """What pruning removed."""

    requested: float
    unstructured_sparsity: float = Field(description="Share of prunable weight values that are zero.")
    structured_removed: int = Field(default=0, description="Whole neurons/channels removed.")
    structured_total: int = 0
    size_before_bytes: int = Field(default=0, description="Bytes of weights (initializers) before pruning.")
    size_after_bytes: int = Field(default=0, description="Bytes of weights after pruning.")


class CandidateResult(_Model):
    """One variant the optimizer tried for the requested mode, and why it was kept or not."""

    name: str
    passed: bool
    mode: str = Field(default="", description="The quantization mode whose thresholds judged it.")
    ms_small: float | None = None
    ms_large: float | None = Field(default=None, description="At the serving batch; `auto` only.")
    speedup_small: float | None = Field(default=None, description="fp32 / this at batch 1; `auto` only.")
    speedup_large: float | None = Field(default=None, description="fp32 / this at the serving batch.")
    size_bytes: int | None = None
    min_cosine: float | None = None
    note: str = ""


class Hardware(_Model):
    """What the latencies were measured on: the serving pods' kind of node, when the Job ran there."""

    cpu_model: str = ""
    cpu_flags: list[str] = Field(
        default_factory=list, description="The flags INT8 speed depends on (avx2, avx512_vnni, amx_int8)."
    )
    cpus: int = Field(default=0, description="CPUs the optimizer could use (its cgroup/affinity limit).")
    gpu: str = ""

    def text(self) -> str:
        parts = [self.gpu] if self.gpu else []
        cpu = self.cpu_model or "unknown CPU"
        if self.cpu_flags:
            cpu += f" ({' '.join(self.cpu_flags)})"
        parts.append(f"{cpu}, {self.cpus} CPUs" if self.cpus else cpu)
        return "; ".join(parts)


class SessionOptions(BaseModel):
    """onnxruntime execution settings for one model: measured by the optimizer, applied by the runtime.

    The defaults are what the runtime uses when nothing was recorded. Unknown keys are
    refused, so a misspelt setting is an error rather than silently ignored. Keys may be
    snake_case (the report, `MSERVE_SESSION_OPTIONS`) or camelCase (the ModelService status).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    intra_op_threads: int = Field(
        default=0,
        ge=0,
        le=MAX_THREADS,
        description="Threads one model run uses; 0: one per CPU the process may use (its cgroup limit). "
        "An explicit thread count given to the runtime wins.",
    )
    inter_op_threads: int = Field(
        default=0,
        ge=0,
        le=MAX_THREADS,
        description="Threads running independent graph nodes at once, parallel mode only; 0: onnxruntime's.",
    )
    allow_spinning: bool = Field(
        default=False,
        description="session.intra_op.allow_spinning: idle intra-op threads busy-wait for work instead of "
        "sleeping (faster hand-off, but CPU taken from the server's own threads).",
    )
    execution_mode: ExecutionMode = "sequential"
    graph_level: GraphLevel = Field(default="all", description="Graph optimization level at load.")

    def text(self) -> str:
        return (
            f"intra_op_threads={self.intra_op_threads or 'cpus'} inter_op_threads={self.inter_op_threads} "
            f"allow_spinning={int(self.allow_spinning)} execution_mode={self.execution_mode} "
            f"graph_level={self.graph_level}"
        )


class SessionTrial(_Model):
    """One candidate setting the optimizer timed on the chosen variant."""

    name: str
    options: SessionOptions
    concurrent_runs: int = Field(description="Batch-1 runs in flight at once, as the runtime would run them.")
    runs_per_s: float = Field(description="Batch-1 throughput, the median of alternating rounds.")


class OptimizationReport(_Model):
    """Everything `mserve optimize` measured about one optimization; written as report.json."""

    schema_version: int = 1
    digest: str = Field(description="The artifact digest: it names the artifact's folder in the store.")
    optimizer_version: str
    source: FileFacts
    source_format: str
    artifact: FileFacts | None = None
    options: dict[str, object] = Field(default_factory=dict)
    steps: list[StepTiming] = Field(default_factory=list)
    validation: list[OutputValidation] = Field(default_factory=list)
    samples: int = 0
    samples_origin: str = ""
    latency: LatencyFigures | None = None
    pruning: PruningFigures | None = None
    candidates: list[CandidateResult] = Field(default_factory=list)
    chosen: str = ""
    hardware: Hardware | None = None
    faster_mode: str = Field(
        default="",
        description="Set when an explicitly requested mode was slower than the fp32 original here: "
        "the mode that would have been faster.",
    )
    session_options: SessionOptions | None = Field(
        default=None, description="The fastest of `session_trials`, for the runtime to apply."
    )
    session_trials: list[SessionTrial] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    versions: dict[str, str] = Field(default_factory=dict)
    verdict: Verdict
    message: str = ""

    @property
    def size_ratio(self) -> float | None:
        if self.artifact is None or not self.source.size_bytes:
            return None
        return self.artifact.size_bytes / self.source.size_bytes

    @property
    def min_cosine(self) -> float | None:
        return min((v.cosine for v in self.validation), default=None)

    @property
    def top1_agreement(self) -> float | None:
        values = [v.top1_agreement for v in self.validation if v.top1_agreement is not None]
        return min(values) if values else None

    def summary(self, artifact_uri: str = "") -> TerminationSummary:
        return TerminationSummary(
            artifact_digest=self.digest,
            artifact_uri=artifact_uri,
            artifact_sha256=self.artifact.sha256 if self.artifact else "",
            verdict=self.verdict,
            message=self.message,
            size_ratio=_round(self.size_ratio),
            latency_ratio_b1=_round(self.latency.ratio_small if self.latency else None),
            latency_ratio_bn=_round(self.latency.ratio_large if self.latency else None),
            min_cosine=_round(self.min_cosine, 6),
            top1_agreement=_round(self.top1_agreement),
            quantize=str(self.options.get("quantize", "none")),
            chosen=self.chosen[:200],
            hardware=self.hardware.text()[:300] if self.hardware else "",
            faster_mode=self.faster_mode,
            session_options=self.session_options,
        )


class TerminationSummary(_Model):
    """The few figures the operator needs, small enough for a pod's termination message."""

    # Older optimizer images wrote "digest": a Job one of them ran is still read after an upgrade.
    artifact_digest: str = Field(
        default="",
        validation_alias=AliasChoices("artifact_digest", "digest"),
        description="The report's digest: the artifact's folder name in `artifact_uri`.",
    )
    artifact_uri: str = ""
    artifact_sha256: str = ""
    verdict: Verdict
    message: str = ""
    size_ratio: float | None = None
    latency_ratio_b1: float | None = None
    latency_ratio_bn: float | None = None
    min_cosine: float | None = Field(default=None, description="The lowest per-output mean cosine.")
    top1_agreement: float | None = None
    quantize: str = "none"
    chosen: str = Field(default="", description="The variant served, and why.")
    hardware: str = Field(default="", description="What the latencies were measured on.")
    faster_mode: str = Field(
        default="", description="Set when the requested mode was slower than the original: the faster one."
    )
    session_options: SessionOptions | None = None

    def to_termination_message(self) -> str:
        """Compact JSON under the Kubernetes limit; an over-long message is cut, never the figures."""
        data = self.model_dump(mode="json", exclude_none=True)
        text = json.dumps(data, separators=(",", ":"))
        overflow = len(text.encode()) - TERMINATION_MESSAGE_LIMIT
        if overflow > 0:
            message = data.get("message", "")
            data["message"] = (
                message.encode()[: max(0, len(message.encode()) - overflow - 3)].decode(errors="ignore")
                + "..."
            )
            text = json.dumps(data, separators=(",", ":"))
        return text

    @classmethod
    def parse_termination_message(cls, text: str) -> TerminationSummary:
        """Read what `to_termination_message` wrote; raises `ValueError` on anything else."""
        try:
            return cls.model_validate_json(text.strip())
        except Exception as exc:
            raise ValueError(f"not an optimizer termination message: {exc}") from exc


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)
