"""A ModelPool's status from a real pool server against a real API server: the test plays the
kubelet (the pool's pod, created by the real ReplicaSet controller, is marked Running at a
loopback address where a real `mserve serve --pool` listens on the admin port), the operator
reads its metrics into loaded models, memory, member states and the members' Ready
conditions, and notices the pod's restart. The pool pods' NetworkPolicy is checked too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from operator_harness import (
    Kube,
    OperatorProcess,
    msvc_path,
    ns_path,
    pool_member,
    ready_pod_status,
    set_pod_status,
)
from pool_pod import pool_server_at

from tests.support.models import build_tiny_mlp
from tests.support.polling import wait_until
from tests.support.serving import Server

POOL = "shared"
MEMBERS = ["good", "idle", "broken"]
SELECTOR = "mserve.io/pool=shared,app.kubernetes.io/component=pool"


def _pools_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "modelpools", name, api="/apis/mserve.io/v1alpha1")


@pytest.fixture
def pool_server(tmp_path: Path, loopback: str) -> Iterator[Server]:
    models = tmp_path / "models"
    models.mkdir()
    build_tiny_mlp(models / "good.onnx", seed=1)
    build_tiny_mlp(models / "idle.onnx", seed=2)
    (models / "broken.onnx").write_bytes(b"not an ONNX model" * 20)
    server = pool_server_at(loopback, models, tmp_path / "pool.log", "--pool-memory-bytes", str(64 << 20))
    yield server
    server.stop()


def _pool_status(kube: Kube, namespace: str) -> dict:
    return (kube.get(_pools_path(namespace, POOL)) or {}).get("status") or {}


def _ready_condition(kube: Kube, namespace: str, name: str) -> dict:
    conditions = ((kube.get(msvc_path(namespace, name)) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == "Ready"), {})


def test_pool_status_reports_loaded_models_memory_member_states_and_restarts(
    installed: Kube, namespace: str, scraping_operator: OperatorProcess, pool_server: Server, loopback: str
) -> None:
    installed.create(_pools_path(namespace), {
        "apiVersion": "mserve.io/v1alpha1", "kind": "ModelPool", "metadata": {"name": POOL},
        "spec": {"replicas": 1, "memoryBudget": "64Mi"},
    })  # fmt: skip
    for name in MEMBERS:
        installed.create(msvc_path(namespace), pool_member(name, POOL))
    wait_until("the pool with 3 members", lambda: _pool_status(installed, namespace).get("members") == 3, 60)

    def pool_pod() -> dict | None:
        pods = installed.list(ns_path(namespace, "pods"), labels=SELECTOR)
        return next((p for p in pods if p["spec"].get("initContainers")), None)  # with its sync sidecar

    pod = wait_until("the pool's pod (from its ReplicaSet)", pool_pod, timeout=60)
    running = {**ready_pod_status(), "podIP": loopback, "podIPs": [{"ip": loopback}]}
    set_pod_status(installed, pod, running)

    with httpx.Client(base_url=pool_server.url.replace("127.0.0.1", loopback), timeout=30) as client:
        body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
        assert client.post("/v2/models/good/infer", json=body).status_code == 200
        assert client.post("/v2/models/broken/infer", json=body).status_code == 409

    def states() -> dict | None:
        status = _pool_status(installed, namespace)
        by_name = {m["name"]: m["state"] for m in status.get("memberStates") or []}
        return status if by_name == {"good": "Loaded", "idle": "Loadable", "broken": "Failed"} else None

    status = wait_until("member states from the pod's metrics", states, timeout=60)
    assert status["loaded"] == 1
    assert status["memoryUsedBytes"] > 0
    assert status["memory"].endswith("/64Mi")
    assert status["pods"][0]["loaded"] == ["good"]
    assert "failed to load: broken" in status["message"]

    good = wait_until(
        "good Ready from the pool",
        lambda: (c := _ready_condition(installed, namespace, "good")).get("reason") == "LoadedInPool" and c,
        timeout=60,
    )
    assert good["status"] == "True"
    assert good["message"] == "loaded on 1 of 1 ready pool pods"
    wait_until(
        "idle Ready as loadable",
        lambda: _ready_condition(installed, namespace, "idle").get("reason") == "LoadableInPool",
        timeout=60,
    )
    broken = wait_until(
        "broken not Ready",
        lambda: (
            (c := _ready_condition(installed, namespace, "broken")).get("reason") == "ModelLoadFailed" and c
        ),
        timeout=60,
    )
    assert broken["status"] == "False"
    assert "failed to load on 1 of 1 ready pool pods" in broken["message"]

    policy = installed.get(
        ns_path(namespace, "networkpolicies", f"{POOL}.pool-ingress", api="/apis/networking.k8s.io/v1")
    )
    assert policy["spec"]["podSelector"]["matchLabels"]["mserve.io/pool"] == POOL
    peers = policy["spec"]["ingress"][0]["from"]
    assert peers[0]["namespaceSelector"]["matchExpressions"][0]["values"] == [namespace]

    # The server container is OOM-killed and comes back: the kubelet would say so like this.
    server = ready_pod_status()["containerStatuses"][0]
    terminated = {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-01-01T00:00:00Z"}
    server = {**server, "restartCount": 1, "lastState": {"terminated": terminated}}
    set_pod_status(installed, pod, {**running, "containerStatuses": [server]})

    def stable_false() -> dict | None:
        conditions = _pool_status(installed, namespace).get("conditions") or []
        stable = next((c for c in conditions if c["type"] == "Stable"), {})
        return stable if stable.get("status") == "False" else None

    stable = wait_until("the pool's Stable condition False", stable_false, timeout=60)
    name = pod["metadata"]["name"]
    assert stable["reason"] == "PodRestarted"
    assert stable["message"] == (
        f"pool pod {name} restarted (OOMKilled, exit code 137); models loaded at the last scrape: good"
    )
    events = installed.list(ns_path(namespace, "events"))
    warned = [e for e in events if e.get("reason") == "PoolPodRestarted"]
    assert [e["type"] for e in warned] == ["Warning"]
    assert name in warned[0]["message"]
