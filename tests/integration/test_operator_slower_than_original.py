"""A requested optimization that made the model slower still rolls out, and the owner is told."""

from __future__ import annotations

from mserve_contract.optimization_report import TerminationSummary
from operator_harness import (
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

from tests.support.polling import wait_until

NAME = "digits"
HARDWARE = "Intel(R) Xeon(R) CPU (avx2 avx512f avx512_vnni), 2 CPUs"


def _job(kube: Kube, namespace: str) -> dict:
    return wait_until("the optimization Job", lambda: kube.list(jobs_path(namespace)), timeout=30)[0]


def _slower_summary(namespace: str, spec_digest: str) -> TerminationSummary:
    """What `mserve optimize --quantize dynamic-int8` writes for the digits MLP on this kind of CPU."""
    artifact_digest = artifact_digest_for(spec_digest)
    return TerminationSummary(
        artifact_digest=artifact_digest,
        artifact_uri=f"s3://mserve-artifacts/{namespace}/{NAME}/{artifact_digest}/model.onnx",
        artifact_sha256="d" * 64,
        verdict="passed",
        message="SLOWER than the fp32 original: dynamic-int8 per-tensor; speed-up 0.58x at batch 1",
        size_ratio=0.31,
        latency_ratio_b1=0.58,
        latency_ratio_bn=1.02,
        min_cosine=0.99998,
        quantize="dynamic-int8",
        chosen="dynamic-int8 per-tensor (fastest of 2 passing candidates)",
        hardware=HARDWARE,
        faster_mode="none",
    )


def test_slower_than_original_rolls_out_with_the_figures_and_a_warning_naming_the_faster_mode(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    installed.create(msvc_path(namespace), modelservice(NAME))
    job = _job(installed, namespace)
    summary = _slower_summary(namespace, spec_digest_of(job))
    finish_job_pod(installed, namespace, job["metadata"]["name"], 0, summary.to_termination_message())

    # The spec asked for dynamic-int8: the artifact is served all the same.
    wait_until("the runtime Deployment", lambda: installed.get(deployments_path(namespace, NAME)), timeout=60)

    def optimized_condition() -> dict | None:
        status = (installed.get(msvc_path(namespace, NAME)) or {}).get("status") or {}
        found = next((c for c in status.get("conditions") or [] if c["type"] == "Optimized"), None)
        return found if found and found["reason"] != "JobRunning" else None

    optimized = wait_until("the Optimized condition's verdict", optimized_condition, timeout=30)
    status = installed.get(msvc_path(namespace, NAME))["status"]
    assert (optimized["status"], optimized["reason"]) == ("True", "SlowerThanOriginal")
    assert "0.58x its speed at batch 1, 1.02x at batch 32" in optimized["message"]
    assert "quantize none would have been faster" in optimized["message"]
    # The CRD keeps what the optimizer measured on and what would have been faster.
    assert status["optimization"]["hardware"] == HARDWARE
    assert status["optimization"]["fasterMode"] == "none"
    assert status["optimization"]["latencyRatioB1"] == 0.58

    selector = f"involvedObject.kind=ModelService,involvedObject.name={NAME}"
    warnings = wait_until(
        "a SlowerThanOriginal warning",
        lambda: [
            e
            for e in installed.list(ns_path(namespace, "events"), fields=selector)
            if e["reason"] == "SlowerThanOriginal"
        ],
    )
    assert warnings[0]["type"] == "Warning"
    assert "quantize none would have been faster" in warnings[0]["message"]


def test_a_new_modelservice_defaults_to_auto_timed_at_its_serving_batch(
    installed: Kube, namespace: str, operator: OperatorProcess
):
    body = modelservice(NAME, optimization={}, serving={"replicas": 1, "batching": {"maxBatchSize": 8}})
    installed.create(msvc_path(namespace), body)
    stored = installed.get(msvc_path(namespace, NAME))
    assert stored["spec"]["optimization"]["quantize"] == "auto"
    args = _job(installed, namespace)["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--quantize") + 1] == "auto"
    assert args[args.index("--latency-batch") + 1] == "8"
