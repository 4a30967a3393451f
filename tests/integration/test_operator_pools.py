"""ModelPools against a real API server: twenty ModelServices join one pool, get no
Deployment of their own, keep their Service name and URL; one moves out of the pool and
back in. Careless pool specs are refused at admission, naming the field."""

from __future__ import annotations

import time

import pytest
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    Kube,
    OperatorProcess,
    deployments_path,
    msvc_path,
    ns_path,
    ready_pod_status,
    set_pod_status,
)

from tests.support.polling import wait_until

POOL = "shared"
MEMBERS = [f"m{i:02d}" for i in range(20)]
POOL_SELECTOR = {"mserve.io/pool": POOL, "app.kubernetes.io/component": "pool"}


def _pools_path(namespace: str, name: str = "") -> str:
    return ns_path(namespace, "modelpools", name, api="/apis/mserve.io/v1alpha1")


def _pool(**spec) -> dict:
    return {"apiVersion": "mserve.io/v1alpha1", "kind": "ModelPool", "metadata": {"name": POOL}, "spec": spec}


def _member(name: str, serving: dict | None = None) -> dict:
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            # ONNX served as it is: no Job, the source is the artifact.
            "model": {"uri": f"https://models.example/{name}.onnx"},
            "optimization": {"quantize": "none"},
            "serving": serving if serving is not None else {"pool": POOL},
        },
    }


def fetched(pod_spec: dict) -> list[str]:
    """Where the pod's fetch init containers put each member's file, in order."""
    places = []
    for container in pod_spec.get("initContainers") or []:
        args = container["args"]
        places += [args[i + 2] for i, arg in enumerate(args) if arg == "--item"]
    return places


def _pool_deployment(kube: Kube, namespace: str, members: int) -> dict | None:
    deployment = kube.get(deployments_path(namespace, POOL))
    if deployment and len(fetched(deployment["spec"]["template"]["spec"])) == members:
        return deployment
    return None


def _service(kube: Kube, namespace: str, name: str) -> dict | None:
    return kube.get(ns_path(namespace, "services", name))


def test_twenty_members_share_one_pool_deployment_and_keep_their_urls(
    installed: Kube, namespace: str, operator: OperatorProcess
) -> None:
    installed.create(_pools_path(namespace), _pool(replicas=2, memoryBudget="512Mi"))
    for name in MEMBERS:
        installed.create(msvc_path(namespace), _member(name))

    deployment = wait_until(
        "the pool Deployment with 20 members", lambda: _pool_deployment(installed, namespace, 20), timeout=90
    )
    pod = deployment["spec"]["template"]["spec"]
    assert fetched(pod) == [f"/models/{n}.onnx" for n in MEMBERS]
    (fetch,) = pod["initContainers"]  # one process fetches all: they share one storage access
    assert fetch["args"][:7] == [
        "fetch", "--role", "source", "--max-bytes", fetch["args"][4],
        "--item", "https://models.example/m00.onnx",
    ]  # fmt: skip
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


def test_a_member_moves_out_of_the_pool_and_back_keeping_its_service(
    installed: Kube, namespace: str, operator: OperatorProcess
) -> None:
    """The Service switches only once the target pods are ready; the pool keeps a leaving member
    while its Service selects the pool; the old Deployment goes only after the switch."""
    pool_pods = "mserve.io/pool=shared,app.kubernetes.io/component=pool"
    own_pods = "mserve.io/modelservice=alpha,app.kubernetes.io/component=runtime"
    installed.create(_pools_path(namespace), _pool())
    for name in ("alpha", "beta"):
        installed.create(msvc_path(namespace), _member(name))
    wait_until("the pool with 2 members", lambda: _pool_deployment(installed, namespace, 2), timeout=60)
    wait_until("the pool rolled out", lambda: _rolled_out(installed, namespace, POOL, pool_pods), timeout=60)
    service = wait_until("Service alpha", lambda: _service(installed, namespace, "alpha"), timeout=60)
    uid = service["metadata"]["uid"]

    installed.merge_patch(msvc_path(namespace, "alpha"), {"spec": {"serving": {"pool": None, "replicas": 1}}})
    wait_until(
        "alpha's own Deployment", lambda: installed.get(deployments_path(namespace, "alpha")), timeout=60
    )
    wait_until(
        "alpha's own pod", lambda: installed.list(ns_path(namespace, "pods"), labels=own_pods), timeout=60
    )
    time.sleep(3)  # reconciles happen meanwhile; none may switch before the pod is ready
    assert _selector(installed, namespace, "alpha") == POOL_SELECTOR, "switched before its pods were ready"
    assert _pool_deployment(installed, namespace, 2), "the pool dropped alpha while it still serves it"

    wait_until("alpha's pods ready", lambda: _rolled_out(installed, namespace, "alpha", own_pods), timeout=60)
    wait_until(
        "alpha's Service selecting its own pods",
        lambda: _selector(installed, namespace, "alpha").get("mserve.io/modelservice") == "alpha",
        timeout=60,
    )
    wait_until("the pool down to 1 member", lambda: _pool_deployment(installed, namespace, 1), timeout=60)
    # rolled out, so that no pod of the two-member template is left to come back at once
    wait_until("the pool rolled out", lambda: _rolled_out(installed, namespace, POOL, pool_pods), timeout=60)

    installed.merge_patch(
        msvc_path(namespace, "alpha"), {"spec": {"serving": {"pool": POOL, "replicas": None}}}
    )
    wait_until("the pool with 2 members again", lambda: _pool_deployment(installed, namespace, 2), timeout=60)
    time.sleep(3)
    assert installed.get(deployments_path(namespace, "alpha")), "own pods gone before the pool's serve alpha"
    assert _selector(installed, namespace, "alpha").get("mserve.io/modelservice") == "alpha"

    wait_until("the pool rolled out", lambda: _rolled_out(installed, namespace, POOL, pool_pods), timeout=90)
    service = wait_until(
        "alpha's Service selecting the pool",
        lambda: (
            (s := _service(installed, namespace, "alpha")) and s["spec"]["selector"] == POOL_SELECTOR and s
        ),
        timeout=60,
    )
    wait_until(
        "alpha's own Deployment gone",
        lambda: installed.get(deployments_path(namespace, "alpha")) is None,
        timeout=60,
    )
    assert service["metadata"]["uid"] == uid, "the same Service throughout: its address never changed"


@pytest.mark.parametrize(
    ("manifest", "named"),
    [
        (_pool(memoryBudget="lots"), "spec.memoryBudget"),
        (_pool(replicas=0), "spec.replicas"),
        (_member("gamma", {"pool": POOL, "replicas": 2}), "spec.serving.pool"),
        (_member("delta", {"pool": "Not_A_Name"}), "spec.serving.pool"),
        (_member("eps", {"pool": POOL, "tls": {"secretName": "eps-tls"}}), "spec.serving.pool"),
        (
            {
                **_member("zeta"),
                "spec": {
                    **_member("zeta")["spec"],
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
