"""The runtime's ingress NetworkPolicy: serving ports from the allowed callers, the admin port
from the metrics scraper, nothing else.

Allowed callers are pods in `spec.access.allowedNamespaces` (the ModelService's own namespace
when unset), narrowed by `allowedPodSelector`. Namespaces are matched by the
`kubernetes.io/metadata.name` label the API server sets on every namespace, so a tenant cannot
label its way in. The kubelet's probes come from the node, which NetworkPolicy does not govern.
"""

from __future__ import annotations

from mserve_operator import names
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.builders.ports import ADMIN_PORT, GRPC_PORT, HTTP_PORT
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


def callers_peer(spec: ModelServiceSpec, namespace: str) -> dict:
    access = spec.access
    peer: dict = {
        "namespaceSelector": {
            "matchExpressions": [
                {
                    "key": NAMESPACE_NAME_LABEL,
                    "operator": "In",
                    "values": sorted(access.namespaces(namespace)),
                }
            ]
        }
    }
    if access.allowed_pod_selector is not None:
        peer["podSelector"] = access.allowed_pod_selector.to_manifest()
    return peer


def scraper_rules(settings: OperatorSettings) -> list[dict]:
    """The admin port (metrics, OpenAPI) from the scraper; with none configured, from no pod."""
    if not settings.network_policy_scraper:
        return []
    peers = [dict(peer) for peer in settings.network_policy_scraper]
    return [{"from": peers, "ports": [{"protocol": "TCP", "port": ADMIN_PORT}]}]


def serving_ports() -> list[dict]:
    return [{"protocol": "TCP", "port": HTTP_PORT}, {"protocol": "TCP", "port": GRPC_PORT}]


def build_ingress_policy(spec: ModelServiceSpec, owner: Owner, settings: OperatorSettings) -> dict | None:
    """None when the install turned runtime NetworkPolicies off."""
    if not settings.network_policy:
        return None
    ingress = [
        {
            "from": [callers_peer(spec, owner.namespace)],
            "ports": serving_ports(),
        }
    ]
    ingress += scraper_rules(settings)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            owner, names.ingress_policy_name(owner.name), names.labels(owner.name, names.COMPONENT_RUNTIME)
        ),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(owner.name, names.COMPONENT_RUNTIME)},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }
