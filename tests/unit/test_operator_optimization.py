"""Reading an optimization Job: the optimizer's verdict and words reach the status; nothing re-runs."""

from __future__ import annotations

import json

from mserve_contract.optimization_report import SessionOptions, TerminationSummary
from mserve_operator.artifact import Artifact
from mserve_operator.builders.deployment import build_deployment
from mserve_operator.conditions import Reason
from mserve_operator.diagnosis import job_outcome, pod_problems
from mserve_operator.optimization import decide_optimization
from mserve_operator.spec import parse_spec
from mserve_operator.spec_digest import spec_digest
from operator_fixtures import OWNER, cpu_spec, settings

SPEC = cpu_spec()
DIGEST = spec_digest(SPEC)
ARTIFACT_DIGEST = "e" * 64
PREFIX = "s3://store/models/digits"
SUMMARY = TerminationSummary(
    artifact_digest=ARTIFACT_DIGEST,
    artifact_uri=f"s3://store/models/digits/{ARTIFACT_DIGEST}/model.onnx",
    artifact_sha256="c" * 64,
    verdict="passed",
    message="min cosine 0.9993 >= 0.99",
    size_ratio=0.27,
    latency_ratio_b1=1.8,
    latency_ratio_bn=2.4,
    min_cosine=0.9993,
    top1_agreement=1.0,
    quantize="dynamic-int8",
)


def _job(condition: str | None, reason: str = "") -> dict:
    conditions = [{"type": condition, "status": "True", "reason": reason}] if condition else []
    return {"metadata": {"name": "digits-opt-x"}, "status": {"conditions": conditions}}


def _pod(exit_code: int, message: str, name: str = "p1") -> dict:
    terminated = {
        "exitCode": exit_code,
        "message": message,
        "reason": "Completed" if exit_code == 0 else "Error",
    }
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {"containerStatuses": [{"name": "optimize", "state": {"terminated": terminated}}]},
    }


def test_completed_job_gives_the_artifact_and_the_report_summary():
    state = decide_optimization(
        SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, SUMMARY.to_termination_message())], PREFIX
    )
    assert state.ok
    assert state.reason == Reason.SUCCEEDED
    assert state.artifact.uri == SUMMARY.artifact_uri
    assert state.artifact.sha256 == SUMMARY.artifact_sha256
    assert state.record["verdict"] == "passed"
    assert state.record["jobName"] == f"digits-opt-{DIGEST[:10]}"
    assert state.record["sizeRatio"] == 0.27
    assert state.record["latencyRatioB1"] == 1.8
    assert state.record["minCosine"] == 0.9993


def test_validation_failure_exit_2_carries_the_optimizers_message():
    failed = SUMMARY.model_copy(update={"verdict": "failed", "message": "output y: cosine 0.91 < 0.99"})
    outcome = job_outcome(_job("Failed", "PodFailurePolicy"), [_pod(2, failed.to_termination_message())])
    assert (outcome.state, outcome.reason) == ("failed", Reason.VALIDATION_FAILED)
    assert outcome.message == "output y: cosine 0.91 < 0.99"


def test_fetch_failure_exit_1_with_a_plain_message():
    outcome = job_outcome(_job("Failed", "PodFailurePolicy"), [_pod(1, "s3://models/x.pt2: NoSuchKey")])
    assert (outcome.state, outcome.reason) == ("failed", Reason.FETCH_FAILED)
    assert "NoSuchKey" in outcome.message


def test_deadline_exceeded_without_a_pod_result():
    outcome = job_outcome(_job("Failed", "DeadlineExceeded"), [])
    assert outcome.reason == Reason.DEADLINE_EXCEEDED


def test_oom_killed_optimizer_is_a_job_failure_with_the_exit_code():
    outcome = job_outcome(_job("Failed", "BackoffLimitExceeded"), [_pod(137, "")])
    assert outcome.reason == Reason.JOB_FAILED
    assert "137" in outcome.message


def test_completed_job_with_garbage_message_is_reported_unreadable():
    outcome = job_outcome(_job("Complete"), [_pod(0, "Traceback (most recent call last): ...")])
    assert outcome.reason == Reason.REPORT_UNREADABLE


def test_the_spec_digest_names_the_job_and_the_artifact_digest_its_folder():
    state = decide_optimization(
        SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, SUMMARY.to_termination_message())], PREFIX
    )
    assert (len(DIGEST), len(ARTIFACT_DIGEST)) == (16, 64)
    assert (state.spec_digest, state.artifact.spec_digest) == (DIGEST, DIGEST)
    assert state.artifact.artifact_digest == ARTIFACT_DIGEST
    assert state.artifact.uri.split("/")[-2] == ARTIFACT_DIGEST
    assert (state.record["specDigest"], state.record["artifactDigest"]) == (DIGEST, ARTIFACT_DIGEST)
    assert "digest" not in state.record
    assert state.artifact.to_status() == {
        "specDigest": DIGEST,
        "artifactDigest": ARTIFACT_DIGEST,
        "uri": SUMMARY.artifact_uri,
        "sha256": SUMMARY.artifact_sha256,
    }


def test_a_summary_from_an_older_optimizer_image_still_names_the_artifact():
    legacy = SUMMARY.to_termination_message().replace('"artifact_digest":', '"digest":')
    state = decide_optimization(SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, legacy)], PREFIX)
    assert state.ok
    assert state.artifact.artifact_digest == ARTIFACT_DIGEST


def test_a_status_written_before_the_digests_had_names_is_read_and_renamed():
    uri = f"s3://store/models/digits/{ARTIFACT_DIGEST}/model.onnx"
    status = {
        "optimization": {"digest": DIGEST, "jobName": "digits-opt-x", "verdict": "passed", "sizeRatio": 0.3},
        "artifact": {"digest": DIGEST, "uri": uri, "sha256": "c" * 64},
        "conditions": [{"type": "Optimized", "status": "True", "reason": "Succeeded", "message": "ok"}],
    }
    state = decide_optimization(SPEC, "digits", DIGEST, status, None, [], PREFIX)
    assert state.ok
    assert not state.needs_job
    assert (state.artifact.uri, state.artifact.sha256) == (uri, "c" * 64)
    assert (state.artifact.spec_digest, state.artifact.artifact_digest) == (DIGEST, ARTIFACT_DIGEST)
    assert state.record == {
        "specDigest": DIGEST,
        "artifactDigest": ARTIFACT_DIGEST,
        "jobName": "digits-opt-x",
        "verdict": "passed",
        "sizeRatio": 0.3,
    }


def test_an_old_status_of_a_source_served_as_it_is_gets_no_artifact_digest():
    served = Artifact.from_status({"digest": DIGEST, "uri": "https://models.example/m.onnx", "sha256": ""})
    assert (served.spec_digest, served.artifact_digest) == (DIGEST, "")
    assert "artifactDigest" not in served.to_status()
    assert Artifact.from_status({"digest": DIGEST}) is None


def test_recorded_verdict_means_no_new_job_after_ttl_cleanup():
    status = {
        "optimization": {"specDigest": DIGEST, "jobName": "digits-opt-x", "verdict": "passed"},
        "artifact": {"specDigest": DIGEST, "uri": "s3://store/a/model.onnx", "sha256": "c" * 64},
        "conditions": [{"type": "Optimized", "status": "True", "reason": "Succeeded", "message": "ok"}],
    }
    state = decide_optimization(SPEC, "digits", DIGEST, status, None, [], PREFIX)
    assert not state.needs_job
    assert state.artifact.uri == "s3://store/a/model.onnx"


def test_recorded_failure_is_not_retried_for_the_same_digest():
    status = {
        "optimization": {"specDigest": DIGEST, "verdict": "failed"},
        "conditions": [
            {"type": "Optimized", "status": "False", "reason": "ValidationFailed", "message": "cos"}
        ],
    }
    state = decide_optimization(SPEC, "digits", DIGEST, status, None, [], PREFIX)
    assert not state.needs_job
    assert state.terminal_failure


def test_new_digest_needs_a_job_even_with_an_old_verdict():
    status = {"optimization": {"specDigest": "old", "verdict": "passed"}}
    state = decide_optimization(SPEC, "digits", DIGEST, status, None, [], PREFIX)
    assert state.needs_job
    assert state.job_name == f"digits-opt-{DIGEST[:10]}"


def test_onnx_source_without_changes_skips_the_job():
    spec = parse_spec(
        {"model": {"uri": "s3://models/m.onnx", "sha256": "E" * 64}, "optimization": {"quantize": "none"}}
    )
    state = decide_optimization(spec, "m", spec_digest(spec), {}, None, [], PREFIX)
    assert state.ok
    assert not state.needs_job
    assert state.reason == Reason.SKIPPED
    assert (state.artifact.uri, state.artifact.sha256) == ("s3://models/m.onnx", "e" * 64)
    assert state.artifact.artifact_digest == ""
    assert state.record == {"specDigest": spec_digest(spec)}


def _waiting(reason: str, init: bool = False, last_exit: int | None = None) -> dict:
    status = {
        "name": "fetch-model" if init else "server",
        "state": {"waiting": {"reason": reason, "message": "m"}},
    }
    if last_exit is not None:
        status["lastState"] = {"terminated": {"exitCode": last_exit, "message": "sha256 mismatch"}}
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"metadata": {"name": "pod-a", "creationTimestamp": "t"}, "status": {key: [status]}}


def test_pod_problems_name_image_pulls_crash_loops_and_failed_init_containers():
    assert pod_problems([_waiting("ImagePullBackOff")])[0].reason == Reason.IMAGE_PULL_ERROR
    assert pod_problems([_waiting("CrashLoopBackOff", last_exit=1)])[0].reason == Reason.CRASH_LOOP_BACK_OFF
    init = pod_problems([_waiting("CrashLoopBackOff", init=True, last_exit=1)])[0]
    assert init.reason == Reason.INIT_CONTAINER_FAILED
    assert "sha256 mismatch" in init.message
    assert pod_problems([_waiting("CreateContainerConfigError")])[0].reason == Reason.CONTAINER_CONFIG_ERROR
    assert pod_problems([_waiting("ContainerCreating")]) == []


def test_pods_being_deleted_are_not_problems():
    pod = _waiting("ImagePullBackOff")
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert pod_problems([pod]) == []


def test_optimizer_pod_that_cannot_start_is_named_while_the_job_runs():
    pod = _pod(0, "")
    pod["status"] = {
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes: Insufficient memory.",
            }
        ]
    }
    state = decide_optimization(SPEC, "digits", DIGEST, {}, _job(None), [pod], PREFIX)
    assert not state.ok
    assert not state.terminal_failure
    assert state.reason == Reason.UNSCHEDULABLE
    assert "Insufficient memory" in state.message


def _reporting(uri: str, sha256: str = "c" * 64):
    summary = SUMMARY.model_copy(update={"artifact_uri": uri, "artifact_sha256": sha256})
    pods = [_pod(0, summary.to_termination_message())]
    return decide_optimization(SPEC, "digits", DIGEST, {}, _job("Complete"), pods, PREFIX)


def test_artifact_outside_the_own_prefix_is_refused_for_good():
    for uri in (
        "s3://store/team-b/digits/abc/model.onnx",  # another tenant's artifact
        "s3://store/models/digits-other/abc/model.onnx",  # a prefix that merely starts alike
        "s3://store/models/digits/../../team-b/digits/abc/model.onnx",  # climbing out
        "s3://other-bucket/models/digits/abc/model.onnx",
        "s3://store/models/digits/",
        "s3://store/models/digits//abc/model.onnx",
    ):
        state = _reporting(uri)
        assert (state.ok, state.reason, state.artifact) == (False, Reason.UNTRUSTED_ARTIFACT, None), uri
        assert "outside this ModelService's prefix s3://store/models/digits/" in state.message
        assert state.terminal_failure
        assert state.record["verdict"] == "failed"


def test_artifact_without_a_sha256_to_reverify_is_refused():
    for sha256 in ("", "C" * 64, "c" * 63, "not-a-digest"):
        state = _reporting("s3://store/models/digits/abc/model.onnx", sha256)
        assert (state.ok, state.reason) == (False, Reason.UNTRUSTED_ARTIFACT), sha256
        assert "without a valid sha256" in state.message


MEASURED = SessionOptions(intra_op_threads=1, allow_spinning=True)


def _runtime_env(artifact: Artifact) -> dict[str, str]:
    deployment = build_deployment(SPEC, OWNER, artifact, settings())
    (server,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in server["env"]}


def test_measured_session_options_reach_the_runtime_env_and_survive_a_restart():
    summary = SUMMARY.model_copy(update={"session_options": MEASURED})
    state = decide_optimization(
        SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, summary.to_termination_message())], PREFIX
    )
    assert state.artifact.session_options == MEASURED
    env = _runtime_env(state.artifact)
    assert SessionOptions.model_validate(json.loads(env["MSERVE_SESSION_OPTIONS"])) == MEASURED
    # After the Job is gone, status.artifact is all that is left: the same env comes back.
    status = {
        "optimization": {"specDigest": DIGEST, "jobName": "digits-opt-x", "verdict": "passed"},
        "artifact": state.artifact.to_status(),
        "conditions": [{"type": "Optimized", "status": "True", "reason": "Succeeded", "message": "ok"}],
    }
    assert status["artifact"]["sessionOptions"]["intraOpThreads"] == 1
    again = decide_optimization(SPEC, "digits", DIGEST, json.loads(json.dumps(status)), None, [], PREFIX)
    assert again.artifact == state.artifact
    assert _runtime_env(again.artifact) == env


def test_without_measured_options_the_runtime_keeps_its_defaults():
    state = decide_optimization(
        SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, SUMMARY.to_termination_message())], PREFIX
    )
    assert state.artifact.session_options is None
    assert "MSERVE_SESSION_OPTIONS" not in _runtime_env(state.artifact)
    assert "sessionOptions" not in state.artifact.to_status()


def test_a_report_with_hostile_session_options_is_unreadable_not_served():
    text = SUMMARY.to_termination_message()[:-1] + ',"session_options":{"intra_op_threads":-1,"evil":1}}'
    state = decide_optimization(SPEC, "digits", DIGEST, {}, _job("Complete"), [_pod(0, text)], PREFIX)
    assert not state.ok
    assert state.artifact is None
    assert state.reason == Reason.REPORT_UNREADABLE
    assert "intra_op_threads" in state.message


def test_a_requested_mode_slower_than_the_original_is_served_and_said_so():
    slower = SUMMARY.model_copy(
        update={
            "latency_ratio_b1": 0.58,
            "latency_ratio_bn": 1.02,
            "faster_mode": "none",
            "hardware": "Intel Xeon (avx2 avx512_vnni), 2 CPUs",
        }
    )
    job, pods = _job("Complete"), [_pod(0, slower.to_termination_message())]
    state = decide_optimization(SPEC, "digits", DIGEST, {}, job, pods, PREFIX)
    assert state.ok  # the spec asked for it: it rolls out
    assert state.artifact.uri == SUMMARY.artifact_uri
    assert state.reason == Reason.SLOWER_THAN_ORIGINAL
    assert "0.58x its speed at batch 1" in state.message
    assert "quantize none would have been faster" in state.message
    assert "avx512_vnni" in state.message
    assert state.record["fasterMode"] == "none"
    assert state.record["hardware"].startswith("Intel Xeon")
    # Recorded: after the Job is gone the condition keeps its reason.
    status = {
        "optimization": state.record,
        "artifact": state.artifact.to_status(),
        "conditions": [
            {"type": "Optimized", "status": "True", "reason": state.reason, "message": state.message}
        ],
    }
    again = decide_optimization(SPEC, "digits", DIGEST, status, None, [], PREFIX)
    assert (again.ok, again.reason, again.message) == (True, Reason.SLOWER_THAN_ORIGINAL, state.message)
