"""Status: conditions, phases, and the rule that lastTransitionTime moves only on change."""

from __future__ import annotations

from mserve_operator.conditions import (
    DEPLOYED,
    OPTIMIZED,
    READY,
    Condition,
    Reason,
    merge_conditions,
    transitions,
)
from mserve_operator.optimization import OptimizationState
from mserve_operator.status import Observation, compute
from operator_fixtures import ARTIFACT, ARTIFACT_DIGEST

DONE = OptimizationState("d" * 16, "digits-opt-dddddddddd", True, Reason.SUCCEEDED, "passed", ARTIFACT, {})
RUNNING = OptimizationState("d" * 16, "digits-opt-dddddddddd", False, Reason.JOB_RUNNING, "running")
FAILED = OptimizationState("d" * 16, "j", False, Reason.VALIDATION_FAILED, "cosine 0.91 < 0.99", None, {})


def _deployment(ready: int, desired: int, *, rolled_out: bool = True, updated: int | None = None) -> dict:
    reason = "NewReplicaSetAvailable" if rolled_out else "ReplicaSetUpdated"
    return {
        "metadata": {"generation": 2},
        "spec": {"replicas": desired},
        "status": {
            "observedGeneration": 2,
            "replicas": desired,
            "updatedReplicas": desired if updated is None else updated,
            "readyReplicas": ready,
            "conditions": [{"type": "Progressing", "status": "True", "reason": reason}],
        },
    }


def _observe(optimization=DONE, deployment=None, pods=(), desired=2, served=ARTIFACT) -> tuple[dict, dict]:
    obs = Observation(
        7, optimization, served, deployment, list(pods), desired, "http://digits.models.svc:8080"
    )
    status, conditions = compute(obs)
    return status, {c.type: c for c in conditions}


def test_all_replicas_ready_is_phase_ready_with_url_and_counts():
    status, conds = _observe(deployment=_deployment(2, 2))
    assert status["phase"] == "Ready"
    assert status["ready"] == "2/2"
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["url"] == "http://digits.models.svc:8080"
    assert status["observedGeneration"] == 7
    assert status["artifact"] == {
        "specDigest": "d" * 16,
        "artifactDigest": ARTIFACT_DIGEST,
        "uri": f"s3://mserve-artifacts/models/digits/{ARTIFACT_DIGEST}/model.onnx",
        "sha256": ARTIFACT.sha256,
    }
    assert [conds[t].status for t in (OPTIMIZED, DEPLOYED, READY)] == ["True", "True", "True"]


def test_running_job_without_artifact_is_optimizing_and_waits():
    status, conds = _observe(optimization=RUNNING, served=None)
    assert status["phase"] == "Optimizing"
    assert conds[OPTIMIZED].reason == Reason.JOB_RUNNING
    assert conds[DEPLOYED].reason == Reason.WAITING_FOR_ARTIFACT
    assert "url" not in status


def test_failed_validation_is_phase_failed_with_the_optimizers_message():
    status, conds = _observe(optimization=FAILED, served=None)
    assert status["phase"] == "Failed"
    assert conds[OPTIMIZED].status == "False"
    assert conds[OPTIMIZED].reason == Reason.VALIDATION_FAILED
    assert status["message"] == "cosine 0.91 < 0.99"


def test_rollout_in_progress_is_deploying():
    status, conds = _observe(deployment=_deployment(1, 2, rolled_out=False, updated=1))
    assert status["phase"] == "Deploying"
    assert conds[DEPLOYED].reason == Reason.ROLLING_OUT


def test_rolled_out_but_replicas_lost_is_degraded():
    status, conds = _observe(deployment=_deployment(1, 2))
    assert status["phase"] == "Degraded"
    assert conds[READY].reason == Reason.REPLICAS_NOT_READY
    assert status["ready"] == "1/2"


def test_unschedulable_gpu_pod_is_degraded_with_the_schedulers_words():
    pod = {
        "metadata": {"name": "digits-abc", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    }
    status, conds = _observe(deployment=_deployment(0, 1, rolled_out=False), pods=[pod], desired=1)
    assert status["phase"] == "Degraded"
    assert conds[DEPLOYED].reason == Reason.UNSCHEDULABLE
    assert "Insufficient nvidia.com/gpu" in conds[DEPLOYED].message


def test_invalid_spec_is_failed():
    obs = Observation(3, None, None, None, invalid_spec="spec.model.uri: field required")
    status, conditions = compute(obs)
    assert status["phase"] == "Failed"
    assert conditions[0].reason == Reason.INVALID_SPEC


def test_transition_time_moves_only_when_status_changes():
    first = merge_conditions([], [Condition.of(READY, False, Reason.REPLICAS_NOT_READY, "0/1")], "T1", 1)
    same = merge_conditions(
        first, [Condition.of(READY, False, Reason.REPLICAS_NOT_READY, "0/1 again")], "T2", 2
    )
    flipped = merge_conditions(same, [Condition.of(READY, True, Reason.ALL_REPLICAS_READY, "1/1")], "T3", 2)
    assert first[0]["lastTransitionTime"] == "T1"
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "T3"


def test_events_only_for_changed_status_or_reason():
    before = merge_conditions([], [Condition.of(OPTIMIZED, False, Reason.JOB_RUNNING, "a")], "T1", 1)
    same = merge_conditions(before, [Condition.of(OPTIMIZED, False, Reason.JOB_RUNNING, "b")], "T2", 1)
    done = merge_conditions(same, [Condition.of(OPTIMIZED, True, Reason.SUCCEEDED, "ok")], "T3", 1)
    assert transitions(before, same) == []
    assert [c["reason"] for c in transitions(same, done)] == [Reason.SUCCEEDED]


def test_missing_secret_is_degraded_naming_it_while_the_old_pods_serve():
    missing = "Secret models/keys (named in spec.access.apiKeySecrets[0]) does not exist"
    obs = Observation(7, DONE, ARTIFACT, _deployment(2, 2), [], 2, "http://x", missing_secret=missing)
    status, conditions = compute(obs)
    deployed = {c.type: c for c in conditions}[DEPLOYED]
    assert (deployed.status, deployed.reason, deployed.message) == ("False", Reason.SECRET_NOT_FOUND, missing)
    assert status["phase"] == "Degraded"
    assert status["message"] == missing
