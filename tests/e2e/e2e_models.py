"""ModelServices as a user writes them, and the calls a client makes to the result."""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from e2e_kube import Cluster, wait_until

RUNTIME_IMAGE_ENV = "MSERVE_E2E_RUNTIME_IMAGE"


@dataclass(frozen=True)
class DigitsModel:
    """The digits model the e2e tier trains and uploads once (the `digits` fixture)."""

    folder: Path
    samples: Path
    uris: dict[str, str]  # "pt2" / "ts" / "onnx" -> s3:// URI


def modelservice(
    name: str,
    uri: str,
    *,
    quantize: str = "dynamic-int8",
    tolerance: dict[str, float] | None = None,
    serving: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A ModelService for the digits model (input x: [-1, 64] FP32)."""
    model_format = {"pt2": "torch-export", "ts": "torchscript", "onnx": "onnx"}[uri.rsplit(".", 1)[-1]]
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": {
                "uri": uri,
                "format": model_format,
                "credentialsSecret": "s3-creds",
                "inputs": [{"name": "x", "shape": [-1, 64], "datatype": "FP32"}],
            },
            "optimization": {"quantize": quantize, "tolerance": tolerance or {"cosine": 0.99}},
            "serving": serving
            or {
                "replicas": 1,
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "1", "memory": "512Mi"},
                },
            },
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_for_phase(cluster: Cluster, namespace: str, name: str, phase: str, timeout: float = 600) -> dict:
    """Poll the ModelService until status.phase is `phase` for its current generation.

    Waiting for Ready stops early on Failed, with the ModelService's message.
    """

    def reached() -> dict | None:
        obj = cluster.get("-n", namespace, "msvc", name)
        status = obj.get("status", {})
        if status.get("observedGeneration") != obj["metadata"]["generation"]:
            return None
        if phase != "Failed" and status.get("phase") == "Failed":
            raise AssertionError(f"{name} Failed: {status.get('message')}\n{json.dumps(status, indent=1)}")
        return obj if status.get("phase") == phase else None

    return wait_until(f"ModelService {namespace}/{name} phase {phase}", reached, timeout=timeout, interval=3)


def service_url(cluster: Cluster, namespace: str, name: str) -> str:
    """http://<ClusterIP>:<port> of the ModelService's Service (reachable from this host)."""
    service = cluster.get("-n", namespace, "service", name)
    port = next(p["port"] for p in service["spec"]["ports"] if p.get("name") == "http")
    return f"http://{service['spec']['clusterIP']}:{port}"


def infer_request(x: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.flatten().tolist()}]
    }


def infer_response(url: str, model: str, x: np.ndarray, timeout: float = 10) -> dict[str, Any]:
    """POST a V2 JSON request; the whole V2 response (model_version says which revision answered)."""
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(infer_request(x)).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def infer_http(url: str, model: str, x: np.ndarray, timeout: float = 10) -> np.ndarray:
    """POST a V2 JSON request; the first output as an array."""
    output = infer_response(url, model, x, timeout)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def run_python_pod(
    cluster: Cluster,
    namespace: str,
    image: str,
    prefix: str,
    args: list[str],
    timeout: float = 120,
    account: str = "",
) -> tuple[str, str]:
    """A one-shot pod (restricted security context) running `python -c *args` from `image`
    (an mserve image, which has a Python): its final phase and its log. With `account`, the pod
    runs as that ServiceAccount with a token for audience `mserve` at /var/run/secrets/mserve/token."""
    pod = f"{prefix}-{uuid.uuid4().hex[:6]}"
    identity: dict[str, Any] = {}
    mounts: dict[str, Any] = {}
    if account:
        token = {"serviceAccountToken": {"audience": "mserve", "expirationSeconds": 600, "path": "token"}}
        identity = {
            "serviceAccountName": account,
            "automountServiceAccountToken": False,
            "volumes": [{"name": "token", "projected": {"sources": [token]}}],
        }
        mounts = {"volumeMounts": [{"name": "token", "mountPath": "/var/run/secrets/mserve"}]}
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "restartPolicy": "Never",
                **identity,
                "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [
                    {
                        "name": "client",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/opt/mserve/bin/python", "-c", *args],
                        **mounts,
                        "resources": {"limits": {"cpu": "200m", "memory": "128Mi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            },
        },
        namespace,
    )

    def finished() -> str | None:
        phase = cluster.get("-n", namespace, "pod", pod).get("status", {}).get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(f"pod {pod}", finished, timeout=timeout)
    return phase, cluster.kubectl("-n", namespace, "logs", pod)


def infer_from_pod(cluster: Cluster, namespace: str, image: str, url: str, body: dict[str, Any]) -> dict:
    """Run a one-shot pod that POSTs `body` to `url`; its answer."""
    # A NetworkPolicy agent learns a new pod's address only after the pod has started: until
    # then the pod's first connections are refused, so it retries those for a while.
    script = (
        "import json, sys, time, urllib.error, urllib.request\n"
        "headers = {'Content-Type': 'application/json'}\n"
        f"r = urllib.request.Request({url!r}, data=sys.argv[1].encode(), headers=headers)\n"
        "deadline = time.monotonic() + 20\n"
        "while True:\n"
        "    try:\n"
        "        print(urllib.request.urlopen(r, timeout=20).read().decode()); break\n"
        "    except urllib.error.URLError as error:\n"
        "        if isinstance(error, urllib.error.HTTPError) or time.monotonic() > deadline: raise\n"
        "        time.sleep(1)\n"
    )
    phase, logs = run_python_pod(cluster, namespace, image, "client", [script, json.dumps(body)])
    assert phase == "Succeeded", logs
    return json.loads(logs)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def original_logits(onnx_path: str, x: np.ndarray) -> np.ndarray:
    """The unoptimized model's answer (its ONNX export, fp32) for comparison."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def jobs_of(cluster: Cluster, namespace: str, name: str) -> list[dict]:
    items = cluster.get("-n", namespace, "jobs", "-l", f"mserve.io/modelservice={name}")["items"]
    return sorted(items, key=lambda job: job["metadata"]["creationTimestamp"])


def pause(seconds: float) -> None:
    """A deliberate wait where the test must let time pass (e.g. to prove nothing happens)."""
    time.sleep(seconds)
