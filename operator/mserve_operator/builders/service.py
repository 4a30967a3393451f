"""The Service in front of the runtime pods: HTTP (REST, /metrics) and gRPC."""

from __future__ import annotations

from mserve_operator import names
from mserve_operator.builders.deployment import GRPC_PORT, HTTP_PORT
from mserve_operator.builders.pod import Owner, metadata


def build_service(owner: Owner) -> dict:
    labels = names.labels(owner.name, names.COMPONENT_RUNTIME)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, owner.name, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels(owner.name, names.COMPONENT_RUNTIME),
            "ports": [
                {
                    "name": "http",
                    "port": HTTP_PORT,
                    "targetPort": "http",
                    "protocol": "TCP",
                    "appProtocol": "http",
                },
                {
                    "name": "grpc",
                    "port": GRPC_PORT,
                    "targetPort": "grpc",
                    "protocol": "TCP",
                    "appProtocol": "grpc",
                },
            ],
        },
    }


def service_url(owner: Owner, cluster_domain: str) -> str:
    return f"http://{owner.name}.{owner.namespace}.svc.{cluster_domain}:{HTTP_PORT}"
