"""Prometheus series of canary rollouts on the stable pods' registry (closed label sets only).

The operator's gates read them (docs/runtime.md, "Canary traffic split and shadow comparison").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from mserve_runtime.rollout_config import RolloutConfig
from mserve_runtime.shadow_compare import Agreement

_COSINE_BUCKETS = (0.0, 0.5, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0)
_ABS_ERROR_BUCKETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
_FORWARD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class CanaryMetrics:
    """What the stable pod applied (file generation, weight, mirror share, canary revision),
    how its forwards went, and how the mirrored answers compared."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.generation = Gauge(
            "mserve_rollout_generation",
            "Generation of the rollout file applied (0: none).",
            registry=registry,
        )
        self.weight = Gauge(
            "mserve_canary_weight_percent",
            "Share of inference requests forwarded to the canary.",
            registry=registry,
        )
        self.mirror = Gauge(
            "mserve_canary_mirror_percent",
            "Share of requests served here (200) that are also sent to the canary and compared.",
            registry=registry,
        )
        self.revision = Gauge(
            "mserve_canary_revision", "Revision of the canary traffic goes to (0: none).", registry=registry
        )
        self.config_errors = Counter(
            "mserve_rollout_config_errors",
            "Rollout file contents rejected (the last good config stays in force).",
            registry=registry,
        )
        forwarded = Counter(
            "mserve_canary_forwarded",
            "Inference requests forwarded to the canary: answered by it, or failed (served here instead).",
            ["outcome"],
            registry=registry,
        )
        self.answered = forwarded.labels("answered")
        self.failed = forwarded.labels("failed")
        self.forward_duration = Histogram(
            "mserve_canary_forward_duration_seconds",
            "Time of each forward to the canary as seen here, answered or failed.",
            buckets=_FORWARD_BUCKETS,
            registry=registry,
        )
        comparisons = Counter(
            "mserve_shadow_comparisons",
            "Mirrored requests compared with the canary's answer: agree, disagree, or error (no answer).",
            ["result"],
            registry=registry,
        )
        self.agree = comparisons.labels("agree")
        self.disagree = comparisons.labels("disagree")
        self.error = comparisons.labels("error")
        self.dropped = Counter(
            "mserve_shadow_dropped",
            "Requests due for mirroring not mirrored: MSERVE_SHADOW_MAX_IN_FLIGHT were in flight.",
            registry=registry,
        )
        top1 = Counter(
            "mserve_shadow_top1_rows",
            "Rows of mirrored classifier outputs whose top-1 matched the stable's, or not.",
            ["match"],
            registry=registry,
        )
        self.top1_same, self.top1_other = top1.labels("true"), top1.labels("false")
        self.min_cosine = Histogram(
            "mserve_shadow_min_cosine",
            "Lowest per-output cosine of each comparison.",
            buckets=_COSINE_BUCKETS,
            registry=registry,
        )
        self.max_abs_error = Histogram(
            "mserve_shadow_max_abs_error",
            "Largest absolute error of each comparison (missing, reshaped or NaN outputs not observed).",
            buckets=_ABS_ERROR_BUCKETS,
            registry=registry,
        )

    def applied(self, config: RolloutConfig) -> None:
        canary = config.canary
        self.generation.set(config.generation)
        self.weight.set(canary.weight if canary else 0)
        self.mirror.set(canary.mirror_percent if canary else 0)
        self.revision.set(canary.revision if canary else 0)

    def compared(self, agreement: Agreement) -> None:
        (self.agree if agreement.agree else self.disagree).inc()
        self.min_cosine.observe(agreement.min_cosine)
        if agreement.max_abs != float("inf"):
            self.max_abs_error.observe(agreement.max_abs)
        rows = sum(o.top1_rows for o in agreement.outputs)
        same = sum(o.top1_same for o in agreement.outputs)
        if same:
            self.top1_same.inc(same)
        if rows - same:
            self.top1_other.inc(rows - same)
