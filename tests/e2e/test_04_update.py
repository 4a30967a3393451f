"""Step 4: changing the optimization runs a new Job and rolls the Deployment with zero failed
requests under continuous load; changing only serving settings runs no Job."""

from __future__ import annotations

import numpy as np
import pytest
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, jobs_of, modelservice, pause, service_url, wait_for_phase
from load import BoundedLoad

NAME = "digits-update"
SERVING = {
    "replicas": 2,
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
}


@pytest.fixture(scope="module")
def served(mserve: Cluster, module_namespace: str, digits: DigitsModel) -> dict:
    mserve.apply(
        modelservice(NAME, digits.uris["ts"], quantize="dynamic-int8", serving=SERVING), module_namespace
    )
    return wait_for_phase(mserve, module_namespace, NAME, "Ready", timeout=900)


def rolled_out(cluster: Cluster, namespace: str, artifact_digest: str) -> bool:
    obj = cluster.get("-n", namespace, "msvc", NAME)
    status = obj.get("status", {})
    deployment = cluster.get("-n", namespace, "deployment", NAME)
    d = deployment["status"]
    return (
        status.get("observedGeneration") == obj["metadata"]["generation"]
        and status.get("phase") == "Ready"
        and status.get("artifact", {}).get("artifactDigest") != artifact_digest
        and d.get("updatedReplicas") == d.get("replicas") == d.get("readyReplicas") == SERVING["replicas"]
        and d.get("observedGeneration") == deployment["metadata"]["generation"]
    )


def test_new_quantization_rolls_out_without_failed_requests(
    mserve: Cluster, module_namespace: str, served: dict, digits: DigitsModel
) -> None:
    before = served["status"]["artifact"]["artifactDigest"]
    x = np.load(digits.samples)["x"][:4]
    url = service_url(mserve, module_namespace, NAME)
    with BoundedLoad(url, NAME, x, threads=2, max_seconds=600, max_requests=100_000) as load:
        mserve.patch(module_namespace, f"msvc/{NAME}", {"spec": {"optimization": {"quantize": "none"}}})
        wait_until(
            "a second optimization Job", lambda: len(jobs_of(mserve, module_namespace, NAME)) == 2, 120
        )
        wait_until(
            "the new artifact rolled out", lambda: rolled_out(mserve, module_namespace, before), 900, 5
        )
        result = load.stop()
    assert result.sent > 50, "the client sent too few requests to prove anything"
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.errors}"


def test_serving_only_change_runs_no_job(mserve: Cluster, module_namespace: str, served: dict) -> None:
    jobs_before = len(jobs_of(mserve, module_namespace, NAME))
    mserve.patch(module_namespace, f"msvc/{NAME}", {"spec": {"serving": {"batching": {"maxBatchSize": 8}}}})
    wait_for_phase(mserve, module_namespace, NAME, "Ready", timeout=300)
    pause(10)  # give a wrongly started Job the time to appear
    assert len(jobs_of(mserve, module_namespace, NAME)) == jobs_before
    env = mserve.get("-n", module_namespace, "deployment", NAME)["spec"]["template"]["spec"]["containers"][0][
        "env"
    ]
    assert {"name": "MSERVE_MAX_BATCH_SIZE", "value": "8"} in env
