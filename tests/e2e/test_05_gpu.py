"""Step 5: GPU scheduling. The node advertises fake nvidia.com/gpu capacity (patched node
status) and GPU labels, as a device plugin and GPU feature discovery would; a GPU
ModelService gets the limit, node selector and tolerations and lands there; asking for more
GPUs than exist shows "Insufficient nvidia.com/gpu" in the ModelService's conditions.

Only placement is tested here: the CPU runtime image stands in for the GPU one, which needs
a real GPU (see docs/operations.md, "GPU").
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, modelservice

GPU = "nvidia.com/gpu"
GPU_LABEL = "nvidia.com/gpu.present"
FAKE_CAPACITY = 2
TOLERATION = {"key": GPU, "operator": "Exists", "effect": "NoSchedule"}


@pytest.fixture(scope="module")
def gpu_node(mserve: Cluster) -> Iterator[str]:
    node = mserve.get("nodes")["items"][0]["metadata"]["name"]
    path = "/status/capacity/" + GPU.replace("/", "~1")
    patch = [{"op": "add", "path": path, "value": str(FAKE_CAPACITY)}]
    mserve.kubectl("patch", "node", node, "--subresource=status", "--type=json", "-p", json.dumps(patch))
    mserve.kubectl("label", "node", node, f"{GPU_LABEL}=true", "--overwrite")
    wait_until(
        "the node to advertise GPUs",
        lambda: mserve.get("node", node)["status"].get("allocatable", {}).get(GPU) == str(FAKE_CAPACITY),
        timeout=60,
    )
    yield node
    remove = [
        {"op": "remove", "path": path},
        {"op": "remove", "path": path.replace("capacity", "allocatable")},
    ]
    mserve.kubectl(
        "patch", "node", node, "--subresource=status", "--type=json", "-p", json.dumps(remove), check=False
    )
    mserve.kubectl("label", "node", node, f"{GPU_LABEL}-", check=False)


def gpu_modelservice(name: str, digits: DigitsModel, runtime_image: str, count: int) -> dict:
    serving = {
        "replicas": 1,
        "image": runtime_image,
        "gpu": {"count": count, "nodeSelector": {GPU_LABEL: "true"}, "tolerations": [TOLERATION]},
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    }
    return modelservice(name, digits.uris["onnx"], quantize="none", serving=serving)


def runtime_image(cluster: Cluster) -> str:
    env = cluster.get("-n", "mserve-system", "deployment", "mserve-operator")["spec"]["template"]["spec"]
    values = {e["name"]: e.get("value", "") for e in env["containers"][0]["env"]}
    return f"{values['MSERVE_OPERATOR_RUNTIME_IMAGE']}:{values['MSERVE_OPERATOR_IMAGE_TAG']}"


def runtime_pods(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    selector = f"mserve.io/modelservice={name},app.kubernetes.io/component=runtime"
    return cluster.get("-n", namespace, "pods", "-l", selector)["items"]


def test_gpu_modelservice_lands_on_the_gpu_node(
    mserve: Cluster, namespace: str, digits: DigitsModel, gpu_node: str
) -> None:
    mserve.apply(gpu_modelservice("digits-gpu", digits, runtime_image(mserve), count=1), namespace)
    pod = wait_until(
        "a scheduled GPU pod",
        lambda: next(
            (p for p in runtime_pods(mserve, namespace, "digits-gpu") if p["spec"].get("nodeName")), None
        ),
        timeout=180,
    )
    assert pod["spec"]["nodeName"] == gpu_node
    assert pod["spec"]["nodeSelector"][GPU_LABEL] == "true"
    assert TOLERATION in [{k: t.get(k) for k in TOLERATION} for t in pod["spec"]["tolerations"]]
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "server")
    assert container["resources"]["limits"][GPU] == "1"


def test_too_many_gpus_is_reported_in_conditions(
    mserve: Cluster, namespace: str, digits: DigitsModel, gpu_node: str
) -> None:
    mserve.apply(gpu_modelservice("digits-gpu-greedy", digits, runtime_image(mserve), count=4), namespace)

    def insufficient() -> str | None:
        status = mserve.get("-n", namespace, "msvc", "digits-gpu-greedy").get("status", {})
        messages = [c.get("message", "") for c in status.get("conditions", [])] + [status.get("message", "")]
        return next((m for m in messages if f"Insufficient {GPU}" in m), None)

    message = wait_until("'Insufficient nvidia.com/gpu' in the conditions", insufficient, timeout=180)
    assert "Insufficient nvidia.com/gpu" in message
