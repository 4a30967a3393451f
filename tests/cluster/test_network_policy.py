"""The cluster enforces NetworkPolicy (kube-router's firewall here): a default-deny policy stops
pod-to-pod traffic, an allow policy lets the pods it names through, and the node itself (kubelet
probes, this host's tests) still reaches the pods."""

from __future__ import annotations

import json
import urllib.request

import pytest
from cluster_helpers import deployment_manifest, pod_manifest, wait_until

from tests.support.kubectl import Kubectl

pytestmark = pytest.mark.cluster

DENY_ALL_INGRESS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "deny-all"},
    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
}
ALLOW_CLIENTS = {
    "apiVersion": "networking.k8s.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "allow-clients"},
    "spec": {
        "podSelector": {"matchLabels": {"app": "web"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": "client"}}}], "ports": [{"port": 8080}]}
        ],
    },
}


def _client(kubectl: Kubectl, namespace: str, name: str, image: str, role: str) -> None:
    """A long-running pod to call from: a pod that calls once at start could race the agent,
    which learns a new pod's address only after the pod has started."""
    kubectl.apply(pod_manifest(name, image, ["serve", ":9090"], {"role": role}, restart="Always"), namespace)


def _call(kubectl: Kubectl, namespace: str, client: str, url: str) -> tuple[bool, str]:
    proc = kubectl.run(
        "-n", namespace, "exec", client, "--", "/clustertest", "get", url, check=False, timeout=30
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


def _host_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=3) as response:
        return response.read().decode()


def test_default_deny_blocks_pods_and_an_allow_policy_lets_the_named_ones_through(
    kubectl: Kubectl, namespace: str, test_image: str
):
    kubectl.apply(deployment_manifest("web", test_image, 1), namespace)
    _client(kubectl, namespace, "client", test_image, "client")
    _client(kubectl, namespace, "stranger", test_image, "stranger")
    kubectl.run("-n", namespace, "rollout", "status", "deploy/web", "--timeout=120s", timeout=150)
    for pod in ("client", "stranger"):
        kubectl.run(
            "-n", namespace, "wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=120s", timeout=150
        )
    web = kubectl.json("-n", namespace, "get", "pods", "-l", "app=web")["items"][0]
    url = f"http://{web['status']['podIP']}:8080/"

    ok, answer = _call(kubectl, namespace, "client", url)
    assert ok, answer
    assert answer.startswith("200 hello from web-"), answer

    kubectl.apply(json.dumps(DENY_ALL_INGRESS), namespace)

    def refused() -> str:
        ok, answer = _call(kubectl, namespace, "client", url)
        assert not ok, f"still reachable under deny-all: {answer}"
        return answer

    # The agent programs a new policy within a sync.
    assert "200 hello" not in wait_until("deny-all enforced", refused, timeout=60)
    # The node is not a pod: kubelet probes (and this host) still reach the pod.
    assert _host_get(url).startswith("hello from web-")
    kubectl.run("-n", namespace, "rollout", "status", "deploy/web", "--timeout=10s", timeout=30)

    kubectl.apply(json.dumps(ALLOW_CLIENTS), namespace)

    def allowed() -> str:
        ok, answer = _call(kubectl, namespace, "client", url)
        assert ok, answer
        return answer

    assert wait_until("allow-clients enforced", allowed, timeout=60).startswith("200 hello from web-")
    # A pod the allow policy does not name is still refused.
    ok, answer = _call(kubectl, namespace, "stranger", url)
    assert not ok, answer
