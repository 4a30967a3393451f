"""From what the operator observed to `status`: conditions, phase, message, replicas, url.

Pure: the same observation always gives the same status, so an unchanged world never
rewrites the status (no flapping) and every phase is a unit test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mserve_operator import revisions
from mserve_operator.artifact import Artifact
from mserve_operator.conditions import CANARY, DEPLOYED, FAILURE_REASONS, OPTIMIZED, READY, Condition, Reason
from mserve_operator.diagnosis import pod_problems
from mserve_operator.optimization import OptimizationState

PENDING, OPTIMIZING, DEPLOYING, READY_PHASE, DEGRADED, FAILED = (
    "Pending",
    "Optimizing",
    "Deploying",
    "Ready",
    "Degraded",
    "Failed",
)


@dataclass(frozen=True)
class Observation:
    generation: int
    optimization: OptimizationState | None  # None when the spec could not be parsed
    served: Artifact | None  # what the Deployment serves (may be an older spec's)
    deployment: dict | None
    pods: list[dict] = field(default_factory=list)
    desired_replicas: int = 1
    url: str = ""
    invalid_spec: str = ""  # a spec the operator refuses: why, naming the field
    invalid_reason: str = Reason.INVALID_SPEC
    conflict: str = ""  # a child the operator may not write (ownership.OwnershipConflictError)
    missing_secret: str = ""  # a Secret the spec names that does not exist, naming it and the field
    revisions: list[dict] | None = None  # status.revisions as revisions.record_revisions made it
    canary: dict | None = None  # status.canary as canary.py decided it
    # A pool member: Ready as the pool's pods report this model (loaded, loadable, failed to load);
    # None falls back to the pods' readiness.
    model_ready: Condition | None = None


def _int(obj: dict | None, *path: str) -> int:
    for key in path:
        obj = (obj or {}).get(key)
    return int(obj or 0)


def _optimized(obs: Observation) -> Condition:
    if obs.invalid_spec:
        return Condition.of(OPTIMIZED, False, obs.invalid_reason, obs.invalid_spec)
    opt = obs.optimization
    return Condition.of(OPTIMIZED, opt.ok, opt.reason, opt.message)


def _deployed(obs: Observation) -> Condition:
    if obs.invalid_spec:
        return Condition.of(DEPLOYED, False, obs.invalid_reason, obs.invalid_spec)
    if obs.conflict:
        return Condition.of(DEPLOYED, False, Reason.CONFLICT, obs.conflict)
    if obs.served is not None and obs.missing_secret:
        return Condition.of(DEPLOYED, False, Reason.SECRET_NOT_FOUND, obs.missing_secret)
    if obs.served is None:
        return Condition.of(DEPLOYED, False, Reason.WAITING_FOR_ARTIFACT, "waiting for a validated artifact")
    deployment = obs.deployment
    if deployment is None:
        return Condition.of(DEPLOYED, False, Reason.ROLLING_OUT, "creating the runtime Deployment")
    problems = pod_problems(obs.pods)
    if problems:
        return Condition.of(DEPLOYED, False, problems[0].reason, problems[0].message)
    progressing = next(
        (
            c
            for c in (deployment.get("status") or {}).get("conditions") or []
            if c.get("type") == "Progressing"
        ),
        {},
    )
    if progressing.get("reason") == "ProgressDeadlineExceeded":
        return Condition.of(
            DEPLOYED, False, Reason.PROGRESS_DEADLINE_EXCEEDED, progressing.get("message", "")
        )
    generation = _int(deployment, "metadata", "generation")
    observed = _int(deployment, "status", "observedGeneration")
    updated = _int(deployment, "status", "updatedReplicas")
    total = _int(deployment, "status", "replicas")
    desired = obs.desired_replicas
    # The Deployment controller says NewReplicaSetAvailable once the new pods are all available.
    rolled_out = desired == 0 or progressing.get("reason") == "NewReplicaSetAvailable"
    if observed < generation or updated < desired or total > updated or not rolled_out:
        available = _int(deployment, "status", "availableReplicas")
        counts = f"{updated}/{desired} replicas updated, {available}/{desired} available"
        message = f"rolling out artifact {obs.served.label}: {counts}"
        return Condition.of(DEPLOYED, False, Reason.ROLLING_OUT, message)
    return Condition.of(DEPLOYED, True, Reason.ROLLOUT_COMPLETE, f"serving artifact {obs.served.label}")


def _ready(obs: Observation) -> Condition:
    if obs.deployment is None:
        return Condition.of(READY, False, Reason.NOT_DEPLOYED, "no runtime Deployment yet")
    if obs.model_ready is not None:
        return obs.model_ready
    ready, desired = _int(obs.deployment, "status", "readyReplicas"), obs.desired_replicas
    if ready >= desired:
        return Condition.of(READY, True, Reason.ALL_REPLICAS_READY, f"{ready}/{desired} replicas ready")
    return Condition.of(READY, False, Reason.REPLICAS_NOT_READY, f"{ready}/{desired} replicas ready")


def _phase(obs: Observation, optimized: Condition, deployed: Condition, ready: Condition) -> str:
    if obs.invalid_spec or (obs.optimization and obs.optimization.terminal_failure):
        return FAILED
    if obs.optimization and not obs.optimization.ok:
        return DEGRADED if obs.optimization.reason == Reason.CONFLICT else OPTIMIZING
    if obs.served is None:
        return PENDING
    if deployed.reason in FAILURE_REASONS:
        return DEGRADED
    if deployed.status == "True" and ready.status == "True":
        return READY_PHASE
    if deployed.status == "True" and ready.reason != Reason.NOT_IN_POOL_YET:
        return DEGRADED  # rolled out, yet replicas are not ready: they were, or they cannot be
    return DEPLOYING


_CANARY_CONDITIONS = {
    "Progressing": (None, Reason.CANARY_PROGRESSING),
    "Promoting": (None, Reason.CANARY_PROGRESSING),
    "Succeeded": (True, Reason.CANARY_PROMOTED),
    "RolledBack": (False, Reason.CANARY_ROLLED_BACK),
    "Aborted": (False, Reason.CANARY_ABORTED),
}


def _canary(canary: dict) -> Condition | None:
    ok, reason = _CANARY_CONDITIONS.get(canary.get("phase", ""), (None, ""))
    if not reason:
        return None
    return Condition.of(CANARY, ok, reason, canary.get("message", ""))


def compute(obs: Observation) -> tuple[dict, list[Condition]]:
    """Status fields (without conditions) and the conditions, for `merge_conditions`."""
    optimized, deployed, ready = _optimized(obs), _deployed(obs), _ready(obs)
    phase = _phase(obs, optimized, deployed, ready)
    first_false = next((c for c in (optimized, deployed, ready) if c.status != "True"), None)
    message = first_false.message if first_false else ready.message
    ready_count = _int(obs.deployment, "status", "readyReplicas")
    status: dict = {
        "observedGeneration": obs.generation,
        "phase": phase,
        "message": message,
        "ready": f"{ready_count}/{obs.desired_replicas}",
        "replicas": obs.desired_replicas,
        "readyReplicas": ready_count,
    }
    if obs.url and obs.deployment is not None:
        status["url"] = obs.url
    if obs.served is not None:
        status["artifact"] = obs.served.to_status()
    if obs.optimization is not None:
        status["optimization"] = obs.optimization.record
    if obs.revisions:
        status["revisions"] = obs.revisions
        serving = revisions.serving_number(obs.revisions)
        if serving is not None:
            status["revision"] = serving
    found = [optimized, deployed, ready]
    if obs.canary:
        # Absent keys, not nulls: an unchanged canary then compares equal to the written status.
        status["canary"] = {k: v for k, v in obs.canary.items() if v is not None}
        condition = _canary(obs.canary)
        if condition is not None:
            found.append(condition)
    return status, found
