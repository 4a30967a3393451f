"""The operator against a real API server: a ModelService becomes a Job, then a served Deployment.

Each test reads like a user's steps: apply, wait for what the operator makes, look at it.
"""

from __future__ import annotations

import pytest
from mserve_contract.optimization_report import SessionOptions, TerminationSummary
from operator_harness import (
    Kube,
    OperatorProcess,
    artifact_digest_for,
    deployments_path,
    finish_job_pod,
    hpa_path,
    jobs_path,
    modelservice,
    msvc_path,
    ns_path,
    pdb_path,
    ready_pod_status,
    runtime_pods,
    set_pod_status,
    spec_digest_of,
)

from tests.support.polling import wait_until

NAME = "digits"


MEASURED = SessionOptions(intra_op_threads=1, graph_level="extended")


def _summary(namespace: str, spec_digest: str, **changes) -> TerminationSummary:
    artifact_digest = artifact_digest_for(spec_digest)
    fields = {
        "artifact_digest": artifact_digest,
        "artifact_uri": f"s3://mserve-artifacts/{namespace}/{NAME}/{artifact_digest}/model.onnx",
        "artifact_sha256": spec_digest[0] * 64,
        "verdict": "passed",
        "message": "min cosine 0.9991 >= 0.99; top-1 agreement 1.000",
        "size_ratio": 0.26,
        "latency_ratio_b1": 1.7,
        "latency_ratio_bn": 2.9,
        "min_cosine": 0.9991,
        "top1_agreement": 1.0,
        "quantize": "dynamic-int8",
        "session_options": MEASURED,
    }
    return TerminationSummary(**{**fields, **changes})


def _status(kube: Kube, namespace: str, name: str = NAME) -> dict:
    return (kube.get(msvc_path(namespace, name)) or {}).get("status") or {}


def _phase(kube: Kube, namespace: str, phase: str, name: str = NAME) -> dict | None:
    status = _status(kube, namespace, name)
    return status if status.get("phase") == phase else None


def _condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def _jobs(kube: Kube, namespace: str) -> list[dict]:
    return kube.list(jobs_path(namespace))


def _one_job(kube: Kube, namespace: str) -> dict:
    return wait_until("the optimization Job", lambda: _jobs(kube, namespace), timeout=30)[0]


def _events(kube: Kube, namespace: str, name: str = NAME) -> list[dict]:
    selector = f"involvedObject.kind=ModelService,involvedObject.name={name}"
    return kube.list(ns_path(namespace, "events"), fields=selector)


def _optimized_and_deployed(kube: Kube, namespace: str, **spec) -> tuple[dict, dict]:
    """Create the ModelService, let its Job pass, wait for the Deployment; return (job, deployment)."""
    kube.create(msvc_path(namespace), modelservice(NAME, **spec))
    job = _one_job(kube, namespace)
    digest = spec_digest_of(job)
    finish_job_pod(
        kube, namespace, job["metadata"]["name"], 0, _summary(namespace, digest).to_termination_message()
    )
    deployment = wait_until(
        "the runtime Deployment", lambda: kube.get(deployments_path(namespace, NAME)), timeout=60
    )
    return job, deployment


def test_create_makes_one_optimization_job_with_the_contract_spec(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = _one_job(installed, namespace)
    status = wait_until("phase Optimizing", lambda: _phase(installed, namespace, "Optimizing"), timeout=30)

    assert job["metadata"]["name"].startswith("digits-opt-")
    assert job["metadata"]["ownerReferences"][0]["kind"] == "ModelService"
    assert job["spec"]["backoffLimit"] <= 10
    assert job["spec"]["activeDeadlineSeconds"] > 0
    assert job["spec"]["ttlSecondsAfterFinished"] > 0
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "mserve-optimizer:it"
    assert container["args"][:2] == ["optimize", "s3://models/digits/model.pt2"]
    assert (
        container["args"][container["args"].index("--output") + 1]
        == f"s3://mserve-artifacts/{namespace}/digits"
    )
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert _condition(status, "Optimized")["reason"] == "JobRunning"
    assert status["optimization"]["jobName"] == job["metadata"]["name"]
    reasons = wait_until(
        "an OptimizationStarted event", lambda: {e["reason"] for e in _events(installed, namespace)} or None
    )
    assert "OptimizationStarted" in reasons


def test_passed_job_gives_deployment_service_hpa_and_a_truthful_status(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    autoscaling = {"minReplicas": 2, "maxReplicas": 4, "targetCPUUtilizationPercentage": 65}
    job, deployment = _optimized_and_deployed(installed, namespace, serving={"autoscaling": autoscaling})
    digest = spec_digest_of(job)
    expected = _summary(namespace, digest)

    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["args"] == [
        "fetch", expected.artifact_uri, "/models/model.onnx", "--role", "store",
        "--max-bytes", str(4 * 1024**3), "--sha256", expected.artifact_sha256,
    ]  # fmt: skip
    assert pod["containers"][0]["args"] == ["serve", "/models/model.onnx", "--name", NAME]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert SessionOptions.model_validate_json(env["MSERVE_SESSION_OPTIONS"]) == MEASURED
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    service = wait_until("the Service", lambda: installed.get(ns_path(namespace, "services", NAME)))
    assert {p["port"] for p in service["spec"]["ports"]} == {8080, 8081}
    hpa = wait_until("the HPA", lambda: installed.get(hpa_path(namespace, NAME)))
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 4)
    assert wait_until("the PDB (minReplicas 2)", lambda: installed.get(pdb_path(namespace, NAME)))

    status = wait_until(
        "phase Deploying or Degraded",
        lambda: _status(installed, namespace).get("url") and _status(installed, namespace),
    )
    assert status["url"] == f"http://digits.{namespace}.svc.cluster.local:8080"
    assert status["artifact"] == {
        "specDigest": digest,
        "artifactDigest": expected.artifact_digest,
        "uri": expected.artifact_uri,
        "sha256": expected.artifact_sha256,
        # Kept by the CRD's status schema, so a restarted operator still passes them on.
        "sessionOptions": MEASURED.model_dump(by_alias=True),
    }
    assert expected.artifact_uri.split("/")[-2] == expected.artifact_digest != digest
    assert status["optimization"]["specDigest"] == digest
    assert status["optimization"]["artifactDigest"] == expected.artifact_digest
    assert status["optimization"]["verdict"] == "passed"
    assert status["optimization"]["sizeRatio"] == 0.26
    assert status["optimization"]["latencyRatioB1"] == 1.7
    assert status["optimization"]["minCosine"] == 0.9991
    assert _condition(status, "Optimized")["status"] == "True"
    assert status["observedGeneration"] == 1

    # The runtime pods become ready (written as a kubelet would): the ModelService is Ready.
    for pod in wait_until(
        "two runtime pods",
        lambda: (
            len(runtime_pods(installed, namespace, NAME)) >= 2 and runtime_pods(installed, namespace, NAME)
        ),
    ):
        set_pod_status(installed, pod, ready_pod_status())
    status = wait_until("phase Ready", lambda: _phase(installed, namespace, "Ready"), timeout=60)
    assert status["ready"] == "2/2"
    assert [_condition(status, t)["status"] for t in ("Optimized", "Deployed", "Ready")] == ["True"] * 3
    reasons = [e["reason"] for e in _events(installed, namespace)]
    assert {"OptimizationStarted", "Succeeded", "AllReplicasReady"} <= set(reasons), reasons


def test_failed_validation_sets_failed_with_the_optimizers_message_and_deploys_nothing(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = _one_job(installed, namespace)
    digest = spec_digest_of(job)
    report = _summary(namespace, digest, verdict="failed", message="output 'logits': cosine 0.912 < 0.99")
    finish_job_pod(installed, namespace, job["metadata"]["name"], 2, report.to_termination_message())

    status = wait_until("phase Failed", lambda: _phase(installed, namespace, "Failed"), timeout=60)
    optimized = _condition(status, "Optimized")
    assert (optimized["status"], optimized["reason"]) == ("False", "ValidationFailed")
    assert optimized["message"] == "output 'logits': cosine 0.912 < 0.99"
    assert installed.get(deployments_path(namespace, NAME)) is None
    warnings = wait_until(
        "a ValidationFailed warning",
        lambda: [e for e in _events(installed, namespace) if e["reason"] == "ValidationFailed"],
    )
    assert warnings[0]["type"] == "Warning"


def test_a_status_written_before_the_digests_had_names_is_served_and_renamed(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = _one_job(installed, namespace)
    wait_until("phase Optimizing", lambda: _phase(installed, namespace, "Optimizing"), timeout=30)
    spec_digest = spec_digest_of(job)
    expected = _summary(namespace, spec_digest)
    # What an operator before specDigest/artifactDigest wrote: one `digest`, the spec's.
    old_status = {
        "optimization": {"digest": spec_digest, "specDigest": None, "verdict": "passed", "sizeRatio": 0.26},
        "artifact": {"digest": spec_digest, "uri": expected.artifact_uri, "sha256": expected.artifact_sha256},
        "conditions": [
            {
                "type": "Optimized",
                "status": "True",
                "reason": "Succeeded",
                "message": "validation passed",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    installed.merge_patch(msvc_path(namespace, NAME) + "/status", {"status": old_status})

    deployment = wait_until(
        "the Deployment of the recorded artifact",
        lambda: installed.get(deployments_path(namespace, NAME)),
        timeout=60,
    )
    assert expected.artifact_uri in deployment["spec"]["template"]["spec"]["initContainers"][0]["args"]
    status = wait_until(
        "the status in the new names",
        lambda: "specDigest" in (s := _status(installed, namespace)).get("artifact", {}) and s,
    )
    assert status["artifact"] == {
        "specDigest": spec_digest,
        "artifactDigest": expected.artifact_digest,
        "uri": expected.artifact_uri,
        "sha256": expected.artifact_sha256,
    }
    assert "digest" not in status["optimization"]
    assert status["optimization"]["specDigest"] == spec_digest
    assert [j["metadata"]["uid"] for j in _jobs(installed, namespace)] == [job["metadata"]["uid"]]


def test_failed_fetch_is_reported_with_its_reason(installed: Kube, namespace: str, operator: OperatorProcess):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = _one_job(installed, namespace)
    finish_job_pod(
        installed, namespace, job["metadata"]["name"], 1, "s3://models/digits/model.pt2: NoSuchKey"
    )
    status = wait_until("phase Failed", lambda: _phase(installed, namespace, "Failed"), timeout=60)
    assert _condition(status, "Optimized")["reason"] == "FetchFailed"
    assert "NoSuchKey" in status["message"]


def test_changed_optimization_runs_a_new_job_and_rolls_out_the_new_artifact(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    first_job, deployment = _optimized_and_deployed(installed, namespace)
    first_template = deployment["spec"]["template"]

    installed.merge_patch(msvc_path(namespace, NAME), {"spec": {"optimization": {"quantize": "static-int8"}}})
    jobs = wait_until(
        "a second Job", lambda: len(_jobs(installed, namespace)) == 2 and _jobs(installed, namespace)
    )
    second = next(j for j in jobs if j["metadata"]["name"] != first_job["metadata"]["name"])
    assert "static-int8" in second["spec"]["template"]["spec"]["containers"][0]["args"]
    # Until the new artifact passes, the old one keeps serving.
    assert installed.get(deployments_path(namespace, NAME))["spec"]["template"] == first_template

    digest = spec_digest_of(second)
    finish_job_pod(
        installed,
        namespace,
        second["metadata"]["name"],
        0,
        _summary(namespace, digest).to_termination_message(),
    )
    artifact_digest = artifact_digest_for(digest)
    rolled = wait_until(
        "the Deployment to serve the new artifact",
        lambda: (
            artifact_digest in str(installed.get(deployments_path(namespace, NAME))["spec"]["template"])
            and installed.get(deployments_path(namespace, NAME))
        ),
        timeout=60,
    )
    assert rolled["metadata"]["generation"] > deployment["metadata"]["generation"]
    # The status follows the Deployment within the same reconcile.
    status = wait_until(
        "the status to name the new artifact",
        lambda: (
            (s := _status(installed, namespace)).get("artifact", {}).get("artifactDigest") == artifact_digest
            and s
        ),
    )
    assert status["artifact"]["specDigest"] == digest
    assert status["observedGeneration"] == 2


def test_serving_change_and_no_change_run_no_job_and_write_nothing(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    _optimized_and_deployed(installed, namespace)
    wait_until("status with the artifact", lambda: _status(installed, namespace).get("artifact"))

    installed.merge_patch(msvc_path(namespace, NAME), {"spec": {"serving": {"replicas": 3}}})
    wait_until(
        "3 replicas", lambda: installed.get(deployments_path(namespace, NAME))["spec"]["replicas"] == 3
    )
    assert wait_until("the PDB", lambda: installed.get(pdb_path(namespace, NAME)))
    assert len(_jobs(installed, namespace)) == 1

    # Nothing changes: more reconciles (a label edit wakes one; resync does too) write nothing.
    wait_until(
        "status for generation 2 after the Deployment controller made all 3 pods",
        lambda: "3/3 replicas updated" in _status(installed, namespace).get("message", ""),
    )
    before = {
        "deployment": installed.get(deployments_path(namespace, NAME))["metadata"]["resourceVersion"],
        "service": installed.get(ns_path(namespace, "services", NAME))["metadata"]["resourceVersion"],
        "pdb": installed.get(pdb_path(namespace, NAME))["metadata"]["resourceVersion"],
        "status": _status(installed, namespace),
    }
    reconciles = operator.reconciles()
    installed.merge_patch(msvc_path(namespace, NAME), {"metadata": {"labels": {"team": "vision"}}})
    wait_until("two more reconciles", lambda: operator.reconciles() >= reconciles + 1, timeout=45)
    installed.merge_patch(msvc_path(namespace, NAME), {"metadata": {"labels": {"team": "ml"}}})
    wait_until("two more reconciles", lambda: operator.reconciles() >= reconciles + 2, timeout=45)
    after = {
        "deployment": installed.get(deployments_path(namespace, NAME))["metadata"]["resourceVersion"],
        "service": installed.get(ns_path(namespace, "services", NAME))["metadata"]["resourceVersion"],
        "pdb": installed.get(pdb_path(namespace, NAME))["metadata"]["resourceVersion"],
        "status": _status(installed, namespace),
    }
    assert after == before
    assert len(_jobs(installed, namespace)) == 1


def test_children_deleted_or_edited_by_hand_are_restored(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    _optimized_and_deployed(installed, namespace)
    service = wait_until("the Service", lambda: installed.get(ns_path(namespace, "services", NAME)))

    installed.delete(ns_path(namespace, "services", NAME))
    restored = wait_until(
        "the Service to come back",
        lambda: (
            (s := installed.get(ns_path(namespace, "services", NAME)))
            and s["metadata"]["uid"] != service["metadata"]["uid"]
            and s
        ),
        timeout=30,
    )
    assert {p["port"] for p in restored["spec"]["ports"]} == {8080, 8081}

    # Someone scales and re-images the Deployment by hand, as another field manager.
    hand_edit = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace},
        "spec": {
            "replicas": 4,
            "template": {"spec": {"containers": [{"name": "server", "image": "evil:latest"}]}},
        },
    }
    installed.apply(deployments_path(namespace, NAME), hand_edit, manager="kubectl-edit")

    def repaired():
        deployment = installed.get(deployments_path(namespace, NAME))
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        return deployment["spec"]["replicas"] == 1 and server["image"] == "mserve-runtime:it" and deployment

    wait_until("the Deployment to be repaired", repaired, timeout=30)

    installed.delete(deployments_path(namespace, NAME))
    wait_until(
        "the Deployment to come back",
        lambda: (
            (d := installed.get(deployments_path(namespace, NAME)))
            and not d["metadata"].get("deletionTimestamp")
        ),
        timeout=30,
    )


def _unschedulable(message: str) -> dict:
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    return {"phase": "Pending", "conditions": [condition]}


def _container(name: str, state: dict, last: dict | None = None) -> dict:
    status = {"name": name, "image": "x", "imageID": "", "ready": False, "restartCount": 3, "state": state}
    if last:
        status["lastState"] = last
    return status


def _waiting(name: str, reason: str, message: str) -> dict:
    waiting = _container(name, {"waiting": {"reason": reason, "message": message}})
    return {"phase": "Pending", "conditions": [], "initContainerStatuses": [], "containerStatuses": [waiting]}


def _crashing(name: str, *, init: bool, message: str) -> dict:
    last = {"terminated": {"exitCode": 1, "reason": "Error", "message": message}}
    container = _container(name, {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}}, last)
    key = "initContainerStatuses" if init else "containerStatuses"
    return {"phase": "Pending" if init else "Running", "conditions": [], key: [container]}


def test_pods_that_cannot_run_surface_in_the_conditions(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    _optimized_and_deployed(installed, namespace)
    pod = wait_until("a runtime pod", lambda: runtime_pods(installed, namespace, NAME))[0]
    cases = [
        (
            _unschedulable("0/1 nodes are available: 1 Insufficient nvidia.com/gpu."),
            "Unschedulable",
            "nvidia.com/gpu",
        ),
        (
            _crashing("fetch-model", init=True, message="sha256 mismatch"),
            "InitContainerFailed",
            "sha256 mismatch",
        ),
        (
            _waiting("server", "ImagePullBackOff", 'Back-off pulling image "mserve-runtime:it"'),
            "ImagePullError",
            "pulling",
        ),
        (
            _crashing("server", init=False, message="model.onnx: INVALID_GRAPH"),
            "CrashLoopBackOff",
            "INVALID_GRAPH",
        ),
    ]
    for pod_status, reason, words in cases:
        set_pod_status(installed, pod, pod_status)

        def surfaced(reason=reason):
            status = _status(installed, namespace)
            deployed = _condition(status, "Deployed") if status.get("conditions") else {}
            return deployed.get("reason") == reason and status

        status = wait_until(f"Deployed reason {reason}", surfaced, timeout=30)
        assert status["phase"] == "Degraded"
        assert words in _condition(status, "Deployed")["message"]
    warnings = {e["reason"] for e in _events(installed, namespace) if e["type"] == "Warning"}
    assert {"Unschedulable", "InitContainerFailed", "ImagePullError", "CrashLoopBackOff"} <= warnings


def test_delete_removes_every_child(installed: Kube, namespace: str, operator: OperatorProcess):
    _optimized_and_deployed(
        installed, namespace, serving={"autoscaling": {"minReplicas": 1, "maxReplicas": 2}}
    )
    wait_until("the HPA", lambda: installed.get(hpa_path(namespace, NAME)))
    installed.delete(msvc_path(namespace, NAME))
    wait_until(
        "the ModelService to be gone", lambda: installed.get(msvc_path(namespace, NAME)) is None, timeout=30
    )

    def children():
        return {
            "deployment": installed.get(deployments_path(namespace, NAME)),
            "service": installed.get(ns_path(namespace, "services", NAME)),
            "hpa": installed.get(hpa_path(namespace, NAME)),
            "jobs": _jobs(installed, namespace),
        }

    # The garbage collector (kube-controller-manager) follows the ownerReferences.
    wait_until("children garbage-collected", lambda: not any(children().values()) or None, timeout=90)


def test_gpu_pod_the_real_scheduler_cannot_place_is_reported_with_its_words(
    installed: Kube, namespace: str, operator_kubeconfig: str, tmp_path
):
    """No status is written here: kube-scheduler itself finds no node with a free GPU."""
    nodes = installed.list("/api/v1/nodes")
    if not nodes:
        pytest.skip(
            "no node: the scheduler has nothing to refuse (hack/cluster.sh up without --control-plane-only)"
        )
    if any("nvidia.com/gpu" in (n["status"].get("allocatable") or {}) for n in nodes):
        pytest.skip("this cluster has GPUs")
    scheduled = {"MSERVE_OPERATOR_SCHEDULER_NAME": "", "MSERVE_OPERATOR_RUNTIME_NODE_SELECTOR": "{}"}
    operator = OperatorProcess(
        operator_kubeconfig, namespace, tmp_path / "operator.log", env=scheduled
    ).start()
    try:
        spec = {
            "model": {"uri": "https://models.example/m.onnx"},
            "optimization": {"quantize": "none"},
            "serving": {"replicas": 1, "gpu": {"count": 1}},
        }
        installed.create(msvc_path(namespace), modelservice(NAME, **spec))
        deployment = wait_until("the Deployment", lambda: installed.get(deployments_path(namespace, NAME)))
        server = deployment["spec"]["template"]["spec"]["containers"][0]
        assert server["resources"]["limits"]["nvidia.com/gpu"] == "1"
        assert server["image"] == "mserve-runtime-gpu:it"

        def unschedulable():
            status = _status(installed, namespace)
            deployed = _condition(status, "Deployed") if status.get("conditions") else {}
            return deployed.get("reason") == "Unschedulable" and status

        status = wait_until("the scheduler's verdict in the status", unschedulable, timeout=90)
        assert status["phase"] == "Degraded"
        assert "Insufficient nvidia.com/gpu" in _condition(status, "Deployed")["message"]
    finally:
        operator.stop()


def test_spec_change_during_optimization_cancels_the_obsolete_job(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    first = _one_job(installed, namespace)
    installed.merge_patch(msvc_path(namespace, NAME), {"spec": {"optimization": {"prune": 0.3}}})

    def only_the_new_job():
        jobs = [j for j in _jobs(installed, namespace) if not j["metadata"].get("deletionTimestamp")]
        names = [j["metadata"]["name"] for j in jobs]
        return len(jobs) == 1 and first["metadata"]["name"] not in names and jobs[0]

    second = wait_until("the running Job of the old spec to be replaced", only_the_new_job, timeout=30)
    assert "0.3" in second["spec"]["template"]["spec"]["containers"][0]["args"]
    status = wait_until(
        "status for generation 2",
        lambda: (
            _status(installed, namespace).get("observedGeneration") == 2 and _status(installed, namespace)
        ),
    )
    assert status["optimization"]["jobName"] == second["metadata"]["name"]
