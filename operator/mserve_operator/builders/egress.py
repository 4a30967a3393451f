"""The optimizer's egress NetworkPolicy: DNS, the artifact store and the model source, nothing else.

NetworkPolicy names addresses, not host names, so the peers come from the install's settings
and the ports from the URIs: a Job cannot reach another tenant's pods or the cluster's
internal services through a crafted source URI.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mserve_operator import names
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.builders.store import artifact_store
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _url_port(url: str) -> int:
    parts = urlsplit(url)
    return parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)


def uri_port(uri: str, s3_endpoint: str) -> int | None:
    """The TCP port a fetch of `uri` connects to; None for volumes and local files."""
    if uri.startswith("s3://"):
        return _url_port(s3_endpoint) if s3_endpoint else 443
    if uri.startswith(("http://", "https://")):
        return _url_port(uri)
    return None


def _rule(peers: list[dict], port: int) -> dict:
    rule: dict = {"ports": [{"protocol": "TCP", "port": port}]}
    if peers:
        rule["to"] = [dict(p) for p in peers]
    return rule


def build_optimizer_egress_policy(
    spec: ModelServiceSpec, owner: Owner, settings: OperatorSettings
) -> dict | None:
    """None when the install turned the policy off."""
    if not settings.optimizer_egress_policy:
        return None
    store = artifact_store(spec, settings)
    egress = [
        {
            "to": [dict(p) for p in settings.optimizer_egress_dns],
            "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
        }
    ]
    store_port = uri_port(store.uri, store.endpoint)
    if store_port is not None:
        egress.append(_rule(settings.optimizer_egress_store, store_port))
    source_port = uri_port(spec.model.uri, settings.s3_endpoint)
    if source_port is not None:
        # A source in the same S3 service as the store is reached where the store is.
        same_service = spec.model.uri.startswith("s3://") and settings.s3_endpoint == store.endpoint
        peers = settings.optimizer_egress_store if same_service else settings.optimizer_egress_source
        rule = _rule(peers, source_port)
        if rule not in egress:
            egress.append(rule)
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(
            owner, names.egress_policy_name(owner.name), names.labels(owner.name, names.COMPONENT_OPTIMIZER)
        ),
        "spec": {
            "podSelector": {"matchLabels": names.selector_labels(owner.name, names.COMPONENT_OPTIMIZER)},
            "policyTypes": ["Egress"],
            "egress": egress,
        },
    }
