"""Running pods, and a nudge to them after a ConfigMap they mount changed.

The kubelet refreshes a pod's ConfigMap volumes when it syncs the pod, which happens on any
change to the pod (or on its periodic sync, up to a minute and more later). Annotating the
pods with the content's new generation or digest is such a change: they see the new file now.
"""

from __future__ import annotations

import logging

from kubernetes.client.exceptions import ApiException

from mserve_operator.kube_api import KubeApi

log = logging.getLogger(__name__)


def running(pods: list[dict]) -> list[dict]:
    """The pods that run and have an address, not being deleted."""
    return [
        p
        for p in pods
        if (p.get("status") or {}).get("phase") == "Running"
        and (p.get("status") or {}).get("podIP")
        and not p["metadata"].get("deletionTimestamp")
    ]


def nudge(api: KubeApi, namespace: str, pods: list[dict], annotation: str, value: str) -> None:
    """Set `annotation` to `value` on each running pod that does not carry it yet."""
    for pod in running(pods):
        if (pod["metadata"].get("annotations") or {}).get(annotation) == value:
            continue
        try:
            api.annotate("v1", "Pod", namespace, pod["metadata"]["name"], {annotation: value})
        except ApiException as exc:  # a pod gone meanwhile; the kubelet's own sync still comes
            log.info(f"pod {pod['metadata']['name']} not nudged: {exc.status}")
