"""Condition types, reasons and the one rule of conditions: lastTransitionTime moves only on change."""

from __future__ import annotations

from dataclasses import dataclass

OPTIMIZED = "Optimized"
DEPLOYED = "Deployed"
READY = "Ready"
# Present once a canary ran: Unknown while one is under way, True once promoted, False when
# rolled back (a gate failed: a Warning Event names it and its figures) or aborted.
CANARY = "Canary"
CONDITION_TYPES = (OPTIMIZED, DEPLOYED, READY, CANARY)


class Reason:
    """CamelCase reasons, one constant each, so tests and users can match on them."""

    # Optimized
    OPTIMIZATION_PENDING = "OptimizationPending"
    JOB_RUNNING = "JobRunning"
    SUCCEEDED = "Succeeded"
    # Succeeded as the spec asked, but the requested mode serves slower than the fp32 original.
    SLOWER_THAN_ORIGINAL = "SlowerThanOriginal"
    SKIPPED = "OptimizationSkipped"
    VALIDATION_FAILED = "ValidationFailed"
    FETCH_FAILED = "FetchFailed"
    DEADLINE_EXCEEDED = "DeadlineExceeded"
    JOB_FAILED = "JobFailed"
    REPORT_UNREADABLE = "ReportUnreadable"
    INVALID_SPEC = "InvalidSpec"
    IMAGE_NOT_ALLOWED = "ImageNotAllowed"
    UNTRUSTED_ARTIFACT = "UntrustedArtifact"
    # Optimized or Deployed: an object the operator would write belongs to someone else.
    CONFLICT = "Conflict"
    # Deployed
    WAITING_FOR_ARTIFACT = "WaitingForArtifact"
    ROLLING_OUT = "RollingOut"
    ROLLOUT_COMPLETE = "RolloutComplete"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    UNSCHEDULABLE = "Unschedulable"
    IMAGE_PULL_ERROR = "ImagePullError"
    CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
    INIT_CONTAINER_FAILED = "InitContainerFailed"
    CONTAINER_CONFIG_ERROR = "ContainerConfigError"
    SECRET_NOT_FOUND = "SecretNotFound"
    # Ready
    ALL_REPLICAS_READY = "AllReplicasReady"
    REPLICAS_NOT_READY = "ReplicasNotReady"
    NOT_DEPLOYED = "NotDeployed"
    # Canary
    CANARY_PROGRESSING = "CanaryProgressing"
    CANARY_PROMOTED = "CanaryPromoted"
    CANARY_ROLLED_BACK = "CanaryRolledBack"
    CANARY_ABORTED = "CanaryAborted"
    # Ready, for a pool member: as the pool's pods report the model
    LOADED_IN_POOL = "LoadedInPool"
    LOADABLE_IN_POOL = "LoadableInPool"
    MODEL_LOAD_FAILED = "ModelLoadFailed"
    NOT_IN_POOL_YET = "NotInPoolYet"


# Optimization outcomes that no retry changes: only a new spec (a new spec digest) runs again.
TERMINAL_OPTIMIZATION_FAILURES = frozenset(
    {
        Reason.VALIDATION_FAILED,
        Reason.FETCH_FAILED,
        Reason.DEADLINE_EXCEEDED,
        Reason.JOB_FAILED,
        Reason.REPORT_UNREADABLE,
        Reason.INVALID_SPEC,
        Reason.UNTRUSTED_ARTIFACT,
    }
)

# Reasons that mean something is wrong (Warning events), not merely "not yet": those, and
# refusals (an image outside the allowlist, an object owned by someone else), the rollout's and
# the pods' troubles, and a requested optimization that made the model slower.
FAILURE_REASONS = TERMINAL_OPTIMIZATION_FAILURES | {
    Reason.SLOWER_THAN_ORIGINAL,
    Reason.IMAGE_NOT_ALLOWED,
    Reason.CONFLICT,
    Reason.PROGRESS_DEADLINE_EXCEEDED,
    Reason.UNSCHEDULABLE,
    Reason.IMAGE_PULL_ERROR,
    Reason.CRASH_LOOP_BACK_OFF,
    Reason.INIT_CONTAINER_FAILED,
    Reason.CONTAINER_CONFIG_ERROR,
    Reason.SECRET_NOT_FOUND,
    Reason.CANARY_ROLLED_BACK,
    Reason.MODEL_LOAD_FAILED,
}


@dataclass(frozen=True)
class Condition:
    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""

    @classmethod
    def of(cls, type_: str, ok: bool | None, reason: str, message: str = "") -> Condition:
        status = "Unknown" if ok is None else ("True" if ok else "False")
        return cls(type_, status, reason, message)


def merge_conditions(previous: list[dict], current: list[Condition], now: str, generation: int) -> list[dict]:
    """The new conditions, each keeping its old lastTransitionTime unless its status changed."""
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for condition in current:
        old = before.get(condition.type)
        changed = old is None or old.get("status") != condition.status
        merged.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
                "observedGeneration": generation,
            }
        )
    return merged


def transitions(previous: list[dict], current: list[dict]) -> list[dict]:
    """Conditions whose status or reason differs from before: each deserves an Event."""
    before = {c.get("type"): c for c in previous or []}
    changed = []
    for condition in current:
        old = before.get(condition["type"])
        if old is None or (old.get("status"), old.get("reason")) != (
            condition["status"],
            condition["reason"],
        ):
            changed.append(condition)
    return changed


def find(conditions: list[dict] | None, type_: str) -> dict | None:
    return next((c for c in conditions or [] if c.get("type") == type_), None)
