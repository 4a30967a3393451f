"""Step 8: mserve's pods pass the restricted Pod Security Standard in a namespace that
enforces it (every e2e namespace does; this test proves the enforcement is real)."""

from __future__ import annotations

import json

from e2e_kube import Cluster
from e2e_models import DigitsModel, modelservice, wait_for_phase


def test_namespace_rejects_a_privileged_pod(mserve: Cluster, namespace: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [{"name": "c", "image": "mserve-runtime", "securityContext": {"privileged": True}}]
        },
    }
    result = mserve.try_kubectl("-n", namespace, "apply", "-f", "-", stdin=json.dumps(pod))
    assert result.returncode != 0
    assert "violates PodSecurity" in result.stderr


def test_modelservice_pods_run_under_restricted(mserve: Cluster, namespace: str, digits: DigitsModel) -> None:
    labels = mserve.get("namespace", namespace)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    mserve.apply(modelservice("digits-restricted", digits.uris["pt2"]), namespace)
    wait_for_phase(mserve, namespace, "digits-restricted", "Ready", timeout=900)
    events = mserve.kubectl("-n", namespace, "get", "events", "-o", "custom-columns=MSG:.message")
    assert "violates PodSecurity" not in events
