"""What only the cluster tier needs beside tests.support: its test image and its polling pace."""

from __future__ import annotations

import json
import subprocess
from functools import partial

from tests.support import polling
from tests.support.kubectl import Kubectl

TEST_IMAGE = "mserve.local/cluster-test:1"

# kubectl's failures and half-written objects count as "not yet" while a cluster converges.
wait_until = partial(
    polling.wait_until,
    timeout=120,
    interval=1.0,
    transient=(AssertionError, subprocess.SubprocessError, ValueError, KeyError),
)


RESTRICTED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def pod_manifest(name: str, image: str, args: list[str], labels: dict | None = None, restart="Never") -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": name}},
            "spec": {
                "restartPolicy": restart,
                "containers": [
                    {
                        "name": "main",
                        "image": image,
                        "imagePullPolicy": "IfNotPresent",
                        "args": args,
                        "securityContext": RESTRICTED,
                    }
                ],
            },
        }
    )


def finish_pod(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    image: str,
    args: list[str],
    labels: dict | None = None,
    timeout=120,
) -> tuple[str, str]:
    """Run a pod to completion: its phase (Succeeded or Failed) and its log."""
    kubectl.apply(pod_manifest(name, image, args, labels), namespace)

    def finished():
        phase = kubectl.json("-n", namespace, "get", "pod", name)["status"].get("phase")
        return phase if phase in ("Succeeded", "Failed") else None

    phase = wait_until(f"pod {name} to finish", finished, timeout=timeout)
    return phase, kubectl.run("-n", namespace, "logs", name, check=False).stdout


def run_pod(kubectl: Kubectl, namespace: str, name: str, image: str, args: list[str], timeout=120) -> str:
    """Run a pod to completion and return its log; fail with the log if it did not succeed."""
    phase, logs = finish_pod(kubectl, namespace, name, image, args, timeout=timeout)
    assert phase == "Succeeded", f"pod {name} {phase}:\n{logs}"
    return logs


def deployment_manifest(name: str, image: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "web",
                                "image": image,
                                "imagePullPolicy": "IfNotPresent",
                                "args": ["serve", ":8080"],
                                "ports": [{"containerPort": 8080, "name": "http"}],
                                "readinessProbe": {
                                    "httpGet": {"path": "/", "port": 8080},
                                    "periodSeconds": 1,
                                },
                                "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                                "securityContext": RESTRICTED,
                            }
                        ],
                    },
                },
            },
        }
    )
