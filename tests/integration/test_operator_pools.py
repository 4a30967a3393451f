"""ModelPools against a real API server: twenty ModelServices join one pool, get no
Deployment of their own, keep their Service name and URL; a member joining changes the pool's
member list (a ConfigMap), not its pod template; one moves out of the pool and back in, served
throughout, with a pool pod played by real processes (tests/integration/pool_pod.py). Careless
pool specs are refused at admission, naming the field."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    Kube,
    OperatorProcess,
    deployments_path,
    msvc_path,
    ns_path,
    pool_member,
    ready_pod_status,
    set_pod_status,
)
from pool_pod import PoolPod

from tests.support.models import build_tiny_mlp
from tests.support.polling import wait_until

POOL = "shared"
MEMBERS = [f"m{i:02d}" for i in range(20)]
POOL_SELECTOR = {"mserve.io/pool": POOL, "app.kubernetes.io/component": "pool"}


def _pools_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "modelpools", name, api="/apis/mserve.io/v1alpha1")


def _pool(**spec) -> dict:
    return {"apiVersion": "mserve.io/v1alpha1", "kind": "ModelPool", "metadata": {"name": POOL}, "spec": spec}


def _lists(kube: Kube, namespace: str) -> dict[str, list[dict]]:
    """The pool's member list (the ConfigMap the sync sidecars read), by access group."""
    config = kube.get(ns_path(namespace, "configmaps", f"{POOL}.pool-members")) or {}
    return {key: json.loads(text) for key, text in (config.get("data") or {}).items()}


def _listed(kube: Kube, namespace: str) -> list[str]:
    return sorted(item["name"] for items in _lists(kube, namespace).values() for item in items)


def _pool_deployment(kube: Kube, namespace: str, members: int) -> dict | None:
    """The pool's Deployment once its member list holds `members` members."""
    deployment = kube.get(deployments_path(namespace, POOL))
    return deployment if deployment and len(_listed(kube, namespace)) == members else None


def _service(kube: Kube, namespace: str, name: str) -> dict | None:
    return kube.get(ns_path(namespace, "services", name))


def test_twenty_members_share_one_pool_deployment_and_keep_their_urls(
    installed: Kube, namespace: str, operator: OperatorProcess, loopback: str
) -> None:
    installed.create(_pools_path(namespace), _pool(replicas=2, memoryBudget="512Mi"))
    for name in MEMBERS:
        installed.create(msvc_path(namespace), pool_member(name, POOL))

    deployment = wait_until(
        "the pool Deployment with 20 members", lambda: _pool_deployment(installed, namespace, 20), timeout=90
    )
    pod = deployment["spec"]["template"]["spec"]
    ((key, items),) = _lists(installed, namespace).items()
    assert [i["file"] for i in items] == [f"{n}.onnx" for n in MEMBERS]
    assert items[0] == {
        "name": "m00",
        "uri": "https://models.example/m00.onnx",
        "file": "m00.onnx",
        "sha256": "-",
    }
    (sync,) = pod["initContainers"]  # one process fetches all: they share one storage access
    assert sync["name"] == f"sync-{key.removesuffix('.json')}"
    assert sync["restartPolicy"] == "Always"
    assert sync["args"][:5] == ["fetch", "--role", "source", "--max-bytes", sync["args"][4]]
    server = pod["containers"][0]
    assert server["args"] == ["serve", "--pool", "/models"]
    env = {e["name"]: e["value"] for e in server["env"]}
    assert env["MSERVE_POOL_MEMORY_BYTES"] == str(512 << 20)
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "ModelPool"

    status = wait_until(
        "the pool's status",
        lambda: (installed.get(_pools_path(namespace, POOL)) or {}).get("status"),
        timeout=60,
    )
    wait_until(
        "20 members in the pool's status",
        lambda: installed.get(_pools_path(namespace, POOL))["status"].get("members") == 20,
        timeout=60,
    )
    status = installed.get(_pools_path(namespace, POOL))["status"]
    assert status["memberNames"] == MEMBERS
    assert status["memoryBudgetBytes"] == 512 << 20
    assert status["ready"] == "0/2"  # no node runs these pods here

    for name in MEMBERS:
        service = wait_until(f"Service {name}", lambda n=name: _service(installed, namespace, n), timeout=60)
        assert service["spec"]["selector"] == POOL_SELECTOR
        assert installed.get(deployments_path(namespace, name)) is None
        url = wait_until(
            f"{name}'s url",
            lambda n=name: (installed.get(msvc_path(namespace, n)).get("status") or {}).get("url"),
            timeout=60,
        )
        assert url == f"http://{name}.{namespace}.svc.cluster.local:8080"

    # One more member: the list changes, the pod template does not (no pod is replaced), and the
    # pool's running pods are nudged so that the kubelet refreshes their copy of the list now.
    before = installed.get(deployments_path(namespace, POOL))
    pod = installed.list(
        ns_path(namespace, "pods"), labels=",".join(f"{k}={v}" for k, v in POOL_SELECTOR.items())
    )[0]
    set_pod_status(installed, pod, {**ready_pod_status(), "podIP": loopback, "podIPs": [{"ip": loopback}]})
    installed.create(msvc_path(namespace), pool_member("m20", POOL))
    wait_until("m20 in the member list", lambda: "m20" in _listed(installed, namespace), timeout=60)
    after = installed.get(deployments_path(namespace, POOL))
    assert after["spec"]["template"] == before["spec"]["template"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]
    wait_until(
        "the running pool pod nudged with the new list's digest",
        lambda: (
            (
                installed.get(ns_path(namespace, "pods", pod["metadata"]["name"]))["metadata"].get(
                    "annotations"
                )
                or {}
            ).get("mserve.io/pool-members-sha256")
            != (pod["metadata"].get("annotations") or {}).get("mserve.io/pool-members-sha256")
        ),
        timeout=30,
    )


def _mark_ready(kube: Kube, namespace: str, selector: str) -> int:
    """Play the kubelet: every pod of the selector Running and Ready; how many there are."""
    pods = [
        p
        for p in kube.list(ns_path(namespace, "pods"), labels=selector)
        if not p["metadata"].get("deletionTimestamp")
    ]
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Running":
            set_pod_status(kube, pod, ready_pod_status())
    return len(pods)


def _rolled_out(kube: Kube, namespace: str, name: str, selector: str) -> bool:
    _mark_ready(kube, namespace, selector)
    deployment = kube.get(deployments_path(namespace, name)) or {}
    status, want = deployment.get("status") or {}, (deployment.get("spec") or {}).get("replicas")
    return (
        bool(want)
        and status.get("updatedReplicas") == status.get("readyReplicas") == status.get("replicas") == want
    )


def _selector(kube: Kube, namespace: str, name: str) -> dict:
    return ((_service(kube, namespace, name) or {}).get("spec") or {}).get("selector") or {}


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "sources"
    for seed, name in enumerate(("alpha", "beta")):
        build_tiny_mlp(folder / f"{name}.onnx", seed=seed)
    return folder


@pytest.fixture
def pool_pod(installed: Kube, namespace: str, loopback: str, tmp_path: Path) -> Iterator[PoolPod]:
    root = tmp_path / "pool-pod"
    root.mkdir()
    pod = PoolPod(installed, namespace, f"{POOL}.pool-members", loopback, root)
    yield pod
    pod.stop()


def test_a_member_moves_out_of_the_pool_and_back_keeping_its_service(
    installed: Kube,
    namespace: str,
    scraping_operator: OperatorProcess,
    sources: Path,
    pool_pod: PoolPod,
) -> None:
    """The Service switches only once the target pods serve the model (own pods ready; every
    ready pool pod lists it); the pool keeps a leaving member while its Service selects the pool;
    the old Deployment goes only after the switch; the pool's pods are never replaced."""
    pool_pods = "mserve.io/pool=shared,app.kubernetes.io/component=pool"
    own_pods = "mserve.io/modelservice=alpha,app.kubernetes.io/component=runtime"
    installed.create(_pools_path(namespace), _pool())
    for name in ("alpha", "beta"):
        installed.create(msvc_path(namespace), pool_member(name, POOL, uri=f"file://{sources}/{name}.onnx"))
    deployment = wait_until("the pool with 2 members", lambda: _pool_deployment(installed, namespace, 2), 60)
    pool_pod.start()
    assert pool_pod.files() == ["alpha.onnx", "beta.onnx"]

    def the_pod() -> dict | None:
        pods = [
            p
            for p in installed.list(ns_path(namespace, "pods"), labels=pool_pods)
            if p["spec"].get("initContainers")
        ]
        return pods[0] if len(pods) == 1 else None

    pod = wait_until("the pool's pod", the_pod, timeout=60)
    pool_pod.run_as(pod)
    service = wait_until(
        "alpha's Service selecting the pool",
        lambda: (
            (s := _service(installed, namespace, "alpha")) and s["spec"]["selector"] == POOL_SELECTOR and s
        ),
        timeout=60,
    )
    uid = service["metadata"]["uid"]
    generation = deployment["metadata"]["generation"]

    installed.merge_patch(msvc_path(namespace, "alpha"), {"spec": {"serving": {"pool": None, "replicas": 1}}})
    wait_until(
        "alpha's own pod", lambda: installed.list(ns_path(namespace, "pods"), labels=own_pods), timeout=60
    )
    time.sleep(3)  # reconciles happen meanwhile; none may switch before the pod is ready
    assert _selector(installed, namespace, "alpha") == POOL_SELECTOR, "switched before its pods were ready"
    assert "alpha" in _listed(installed, namespace), "the pool dropped alpha while it still serves it"
    assert pool_pod.files() == ["alpha.onnx", "beta.onnx"]

    wait_until("alpha's pods ready", lambda: _rolled_out(installed, namespace, "alpha", own_pods), timeout=60)
    wait_until(
        "alpha's Service selecting its own pods",
        lambda: _selector(installed, namespace, "alpha").get("mserve.io/modelservice") == "alpha",
        timeout=60,
    )
    wait_until("the pool's list down to beta", lambda: _listed(installed, namespace) == ["beta"], timeout=60)
    wait_until("alpha's file gone from the pool pod", lambda: pool_pod.files() == ["beta.onnx"], timeout=30)

    installed.merge_patch(
        msvc_path(namespace, "alpha"), {"spec": {"serving": {"pool": POOL, "replicas": None}}}
    )
    # The own pods serve until the pool's pod lists alpha again, then the Service switches.
    service = wait_until(
        "alpha's Service selecting the pool again",
        lambda: (
            (s := _service(installed, namespace, "alpha")) and s["spec"]["selector"] == POOL_SELECTOR and s
        ),
        timeout=60,
    )
    assert pool_pod.files() == ["alpha.onnx", "beta.onnx"], "switched before the pool's pod had alpha"
    status = installed.get(_pools_path(namespace, POOL))["status"]
    alpha = next(m for m in status["memberStates"] if m["name"] == "alpha")
    assert alpha["listedPods"] == alpha["readyPods"] == 1
    wait_until(
        "alpha's own Deployment gone",
        lambda: installed.get(deployments_path(namespace, "alpha")) is None,
        timeout=60,
    )
    assert service["metadata"]["uid"] == uid, "the same Service throughout: its address never changed"
    assert installed.get(deployments_path(namespace, POOL))["metadata"]["generation"] == generation
    assert [p["metadata"]["uid"] for p in installed.list(ns_path(namespace, "pods"), labels=pool_pods)] == [
        pod["metadata"]["uid"]
    ], "the pool's pod was never replaced"
    body = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
    with httpx.Client(base_url=f"http://{pool_pod.loopback}:{pool_pod.server.port}", timeout=30) as client:
        assert client.post("/v2/models/alpha/infer", json=body).status_code == 200


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        (_pool(memoryBudget="lots"), "spec.memoryBudget"),
        (_pool(replicas=0), "spec.replicas"),
        (pool_member("gamma", POOL, {"pool": POOL, "replicas": 2}), "spec.serving.pool"),
        (pool_member("delta", POOL, {"pool": "Not_A_Name"}), "spec.serving.pool"),
        (pool_member("eps", POOL, {"pool": POOL, "tls": {"secretName": "eps-tls"}}), "spec.serving.pool"),
        (
            {
                **pool_member("zeta", POOL),
                "spec": {
                    **pool_member("zeta", POOL)["spec"],
                    "access": {"authentication": "apiKey", "apiKeySecrets": ["keys"]},
                },
            },
            "spec.serving.pool",
        ),
    ],
)
def test_careless_pool_specs_are_refused_naming_the_field(
    installed: Kube, namespace: str, manifest: dict, named: str
) -> None:
    path = _pools_path(namespace) if manifest["kind"] == "ModelPool" else msvc_path(namespace)
    with pytest.raises(ApiException) as caught:
        installed.create(path, manifest)
    assert caught.value.status == 422
    assert named in caught.value.body
