"""Step 3: under a bounded load the HPA scales the runtime out, and back in once it stops.

The local cluster's controller-manager syncs HPAs every 5 s with a 30 s downscale
stabilization (hack/cluster.sh), so this takes minutes, not tens of minutes.
"""

from __future__ import annotations

import numpy as np
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, modelservice, service_url, wait_for_phase
from load import BoundedLoad

NAME = "digits-hpa"


def hpa_replicas(cluster: Cluster, namespace: str) -> tuple[int, int]:
    status = cluster.get("-n", namespace, "hpa", NAME).get("status", {})
    return status.get("currentReplicas", 0), status.get("desiredReplicas", 0)


def scaled_in(cluster: Cluster, namespace: str) -> bool:
    ready = cluster.get("-n", namespace, "deployment", NAME)["status"].get("readyReplicas", 0)
    return hpa_replicas(cluster, namespace)[1] == 1 and ready == 1


def test_hpa_scales_out_under_load_and_back_in(mserve: Cluster, namespace: str, digits: DigitsModel) -> None:
    serving = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    }
    # An ONNX source with quantize none is served as it is: no Job, so the test is about scaling.
    mserve.apply(modelservice(NAME, digits.uris["onnx"], quantize="none", serving=serving), namespace)
    wait_for_phase(mserve, namespace, NAME, "Ready", timeout=300)
    wait_until(
        "HPA reads CPU metrics",
        lambda: mserve.get("-n", namespace, "hpa", NAME).get("status", {}).get("currentMetrics"),
        timeout=180,
    )

    x = np.load(digits.samples)["x"][:8]
    with BoundedLoad(
        service_url(mserve, namespace, NAME), NAME, x, threads=6, max_seconds=240, max_requests=200_000
    ):
        wait_until("HPA scales out", lambda: hpa_replicas(mserve, namespace)[1] >= 2, timeout=240, interval=5)
    wait_until("HPA scales back in", lambda: scaled_in(mserve, namespace), timeout=300, interval=5)
