"""The Service in front of the runtime pods: HTTP (REST) and gRPC; never the admin port."""

from __future__ import annotations

from mserve_operator import names
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.builders.ports import GRPC_PORT, HTTP_PORT


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


def service_url(owner: Owner, cluster_domain: str, *, tls: bool = False) -> str:
    scheme = "https" if tls else "http"
    return f"{scheme}://{owner.name}.{owner.namespace}.svc.{cluster_domain}:{HTTP_PORT}"
