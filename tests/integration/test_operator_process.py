"""The operator as a process: killed mid-Job, limited to its ClusterRole, observable, and at scale."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from mserve_contract.optimization_report import TerminationSummary
from operator_harness import (
    NO_SCHEDULER,
    OPERATOR_SA,
    Kube,
    OperatorProcess,
    artifact_digest_for,
    deployments_path,
    finish_job_pod,
    jobs_path,
    modelservice,
    msvc_path,
    ns_path,
    spec_digest_of,
)

from tests.support.cluster_access import find_binary
from tests.support.polling import wait_until

SA_USER = f"system:serviceaccount:{OPERATOR_SA[0]}:{OPERATOR_SA[1]}"


def _passed(namespace: str, name: str, spec_digest: str) -> str:
    artifact_digest = artifact_digest_for(spec_digest)
    return TerminationSummary(
        artifact_digest=artifact_digest,
        artifact_uri=f"s3://mserve-artifacts/{namespace}/{name}/{artifact_digest}/model.onnx",
        artifact_sha256=spec_digest[0] * 64,
        verdict="passed",
        message="ok",
        quantize="dynamic-int8",
    ).to_termination_message()


def test_operator_killed_mid_optimization_resumes_without_a_second_job(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice("digits"))
    (job,) = wait_until("the Job", lambda: installed.list(jobs_path(namespace)), timeout=30)
    operator.kill()

    # While no operator runs, the optimizer finishes.
    finish_job_pod(
        installed, namespace, job["metadata"]["name"], 0, _passed(namespace, "digits", spec_digest_of(job))
    )
    # A replacement pod draws a new random priority; here it is the higher one, so it acts at once.
    operator.priority += 1
    operator.start()
    deployment = wait_until(
        "the Deployment", lambda: installed.get(deployments_path(namespace, "digits")), timeout=60
    )
    assert artifact_digest_for(spec_digest_of(job)) in str(deployment["spec"]["template"])
    jobs = installed.list(jobs_path(namespace))
    assert [j["metadata"]["uid"] for j in jobs] == [job["metadata"]["uid"]]


def test_restart_while_the_job_runs_adopts_the_running_job(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice("digits"))
    (job,) = wait_until("the Job", lambda: installed.list(jobs_path(namespace)), timeout=30)
    operator.kill()
    # Same priority as the killed process: the new one waits until the dead peer's entry in the
    # peering object expires (the peering lifetime), then acts.
    operator.start()
    wait_until("a reconcile by the new process", lambda: operator.reconciles() >= 1 or None, timeout=90)
    assert [j["metadata"]["uid"] for j in installed.list(jobs_path(namespace))] == [job["metadata"]["uid"]]
    status = installed.get(msvc_path(namespace, "digits"))["status"]
    assert status["phase"] == "Optimizing"


@pytest.mark.parametrize(
    ("verb", "resource", "allowed"),
    [
        ("watch", "modelservices.mserve.io", True),
        ("patch", "modelservices.mserve.io/status", True),
        ("create", "jobs.batch", True),
        ("patch", "jobs.batch", False),
        ("patch", "deployments.apps", True),
        ("delete", "deployments.apps", True),  # a ModelService that joins a pool loses its own
        ("delete", "horizontalpodautoscalers.autoscaling", True),
        ("patch", "networkpolicies.networking.k8s.io", True),
        ("delete", "networkpolicies.networking.k8s.io", True),  # access: the policy follows the spec
        ("create", "events", True),
        ("list", "pods", True),
        ("create", "pods", False),
        ("get", "secrets", True),  # whether a Secret named in spec.access/tls exists (metadata only)
        ("list", "secrets", False),
        ("watch", "secrets", False),
        ("list", "configmaps", False),
        ("update", "modelservices.mserve.io", False),
        ("delete", "modelservices.mserve.io", False),
        ("patch", "kopfpeerings.kopf.dev", True),
        ("list", "customresourcedefinitions.apiextensions.k8s.io", False),
    ],
)
def test_the_operators_identity_has_exactly_the_verbs_it_needs(installed: Kube, verb, resource, allowed):
    """Sufficiency is proven by every other test (the operator runs as this identity and any 403
    fails the test); this pins the things it must never be able to do."""
    kubectl = find_binary("kubectl")
    if not kubectl:
        pytest.skip("no kubectl for `kubectl auth can-i`")
    answer = subprocess.run(
        [
            kubectl,
            "--kubeconfig",
            installed.kubeconfig,
            "auth",
            "can-i",
            verb,
            resource,
            "--as",
            SA_USER,
            "-n",
            "default",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"{verb} {resource}: {answer}"


def test_liveness_and_metrics_endpoints(installed: Kube, namespace: str, operator: OperatorProcess):
    installed.create(msvc_path(namespace), modelservice("digits"))
    wait_until("a reconcile", lambda: operator.reconciles() > 0 or None, timeout=30)
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz", timeout=5) as rsp:
        assert rsp.status == 200
    metrics = operator.metrics()
    assert metrics["mserve_operator_optimization_jobs_created_total"] == 1
    assert metrics['mserve_operator_modelservices{phase="Optimizing"}'] == 1
    assert any(k.startswith("mserve_operator_reconcile_duration_seconds_bucket") for k in metrics)


def test_a_higher_priority_peer_pauses_the_other(
    installed: Kube, namespace: str, operator: OperatorProcess, operator_kubeconfig: str, tmp_path: Path
):
    second = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "second.log", priority=200).start()
    try:
        wait_until(
            "the first operator to pause",
            lambda: "Pausing operations in favour of" in operator.log(),
            timeout=60,
        )
        peering = installed.get(f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/mserve")
        priorities = sorted(peer["priority"] for peer in (peering.get("status") or {}).values())
        assert priorities == [100, 200]
        # The paused one must not act: only the second one creates the Job.
        installed.create(msvc_path(namespace), modelservice("digits"))
        wait_until("the Job", lambda: installed.list(jobs_path(namespace)), timeout=30)
        assert operator.reconciles() == 0
    finally:
        second.stop()


def test_fifty_modelservices_at_once_all_reach_their_children(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    count = 50
    cpu_before, started = operator.cpu_seconds(), time.monotonic()
    for i in range(count):
        installed.create(msvc_path(namespace), modelservice(f"model-{i:02d}"))
    created = time.monotonic()
    jobs = wait_until(
        f"{count} Jobs",
        lambda: len(j := installed.list(jobs_path(namespace))) == count and j,
        timeout=300,
        interval=2,
    )
    jobs_at = time.monotonic()
    for job in jobs:
        owner = job["metadata"]["labels"]["mserve.io/modelservice"]
        finish_job_pod(
            installed, namespace, job["metadata"]["name"], 0, _passed(namespace, owner, spec_digest_of(job))
        )
    finished = time.monotonic()

    def served() -> bool:
        deployments = installed.list(deployments_path(namespace))
        services = installed.list(ns_path(namespace, "services"))
        statuses = [m.get("status") or {} for m in installed.list(msvc_path(namespace))]
        with_artifact = [s for s in statuses if (s.get("artifact") or {}).get("uri") and s.get("url")]
        return len(deployments) == count and len(services) == count and len(with_artifact) == count

    wait_until(f"{count} Deployments, Services and statuses", served, timeout=300, interval=2)
    done = time.monotonic()
    cpu = operator.cpu_seconds() - cpu_before
    total = done - started
    print(
        f"\n{count} ModelServices: created in {created - started:.1f}s; all {count} Jobs after "
        f"{jobs_at - started:.1f}s; Jobs finished (status writes) in {finished - jobs_at:.1f}s; "
        f"all Deployments, Services and statuses {done - finished:.1f}s later; total {total:.1f}s. "
        f"Operator CPU {cpu:.1f}s ({cpu / total * 100:.0f}% of one core), "
        f"peak RSS {operator.rss_mib():.0f} MiB; {operator.reconciles():.0f} reconciles."
    )
    assert len(installed.list(jobs_path(namespace))) == count


def test_in_process_with_kopf_runner(installed: Kube, namespace: str, operator_kubeconfig: str, monkeypatch):
    """The same handlers, run in-process by kopf's own test runner, as the operator's identity."""
    from kopf.testing import KopfRunner

    monkeypatch.setenv("KUBECONFIG", operator_kubeconfig)
    monkeypatch.setenv("MSERVE_OPERATOR_METRICS_PORT", "0")
    monkeypatch.setenv("MSERVE_OPERATOR_IMAGE_TAG", "it")
    monkeypatch.setenv("MSERVE_OPERATOR_SCHEDULER_NAME", NO_SCHEDULER)
    args = ["run", "--standalone", "--namespace", namespace, "-m", "mserve_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        installed.create(msvc_path(namespace), modelservice("digits"))
        (job,) = wait_until("the Job", lambda: installed.list(jobs_path(namespace)), timeout=30)
        wait_until(
            "status Optimizing",
            lambda: (
                (installed.get(msvc_path(namespace, "digits")).get("status") or {}).get("phase")
                == "Optimizing"
            ),
            timeout=30,
        )
    assert runner.exception is None
    assert runner.exit_code == 0
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "mserve-optimizer:it"
