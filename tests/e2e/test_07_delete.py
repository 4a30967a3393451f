"""Step 7: deleting a ModelService removes everything it owns."""

from __future__ import annotations

from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, modelservice, wait_for_phase

NAME = "digits-delete"


def children(cluster: Cluster, namespace: str) -> list[str]:
    kinds = "deployments,services,hpa,pdb,jobs,pods"
    selector = f"mserve.io/modelservice={NAME}"
    return cluster.kubectl("-n", namespace, "get", kinds, "-l", selector, "-o", "name").split()


def test_delete_removes_the_children(mserve: Cluster, namespace: str, digits: DigitsModel) -> None:
    serving = {
        "autoscaling": {"minReplicas": 1, "maxReplicas": 2},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    }
    mserve.apply(modelservice(NAME, digits.uris["onnx"], quantize="none", serving=serving), namespace)
    wait_for_phase(mserve, namespace, NAME, "Ready", timeout=300)
    assert children(mserve, namespace)

    mserve.kubectl("-n", namespace, "delete", "msvc", NAME, "--wait=true", "--timeout=180s", timeout=200)
    wait_until("every child gone", lambda: not children(mserve, namespace), timeout=120)
