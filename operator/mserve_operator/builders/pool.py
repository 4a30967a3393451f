"""A ModelPool's children: the Deployment of `mserve serve --pool` pods, and for each member
a Service of the member's own name that selects the pool's pods.

The pods fetch every member's artifact into one directory, named by the member, which the
server serves as its model repository: one init container (one `mserve fetch` process) per
group of members that use the same storage access, so twenty members in the install's store
are one container, and no container holds a Secret that a member it fetches does not use.
A change of members changes the pod template (the annotation lists every member's
artifact), so the pods roll out with the new set.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from mserve_operator import names
from mserve_operator.artifact import Artifact
from mserve_operator.builders.deployment import (
    MODEL_DIR,
    fetch_image,
    gpu_scheduling,
    resources_with_defaults,
    server_container,
    shutdown_budget,
)
from mserve_operator.builders.ingress import scraper_rules, serving_ports
from mserve_operator.builders.pod import (
    STORE_ROLE,
    Owner,
    StorageAccess,
    container_security_context,
    metadata,
    pod_security_context,
    tmp_volume,
)
from mserve_operator.builders.ports import ADMIN_PORT, GRPC_PORT, HTTP_PORT
from mserve_operator.builders.service import build_service
from mserve_operator.pool_spec import POOL_KIND, ModelPoolSpec
from mserve_operator.settings import OperatorSettings

POOL_LABEL = "mserve.io/pool"
COMPONENT_POOL = "pool"
MEMBERS_ANNOTATION = "mserve.io/pool-members-sha256"


@dataclass(frozen=True)
class PoolMember:
    """A ModelService served by the pool: its name (the model's name in the pool) and artifact."""

    name: str
    artifact: Artifact
    role: str = STORE_ROLE
    secret: str = ""
    endpoint: str = ""
    callers: dict = field(default_factory=dict, compare=False)
    """NetworkPolicy peer of the member's allowed callers (builders/ingress.callers_peer)."""


def pool_owner(body: dict) -> Owner:
    meta = body["metadata"]
    return Owner(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"], kind=POOL_KIND)


def pool_selector(pool: str) -> dict[str, str]:
    return {POOL_LABEL: pool, "app.kubernetes.io/component": COMPONENT_POOL}


def pool_labels(pool: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mserve",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/managed-by": names.MANAGED_BY,
        "app.kubernetes.io/part-of": "mserve",
        **pool_selector(pool),
    }


def pool_image(spec: ModelPoolSpec, settings: OperatorSettings) -> str:
    if spec.image:
        return spec.image
    image = settings.runtime_gpu_image if spec.uses_gpu else settings.runtime_image
    return f"{image}:{settings.image_tag}"


def members_digest(members: list[PoolMember]) -> str:
    text = "\n".join(f"{m.name} {m.artifact.uri} {m.artifact.sha256}" for m in members)
    return hashlib.sha256(text.encode()).hexdigest()


def access_group(member: PoolMember) -> tuple[str, ...]:
    """Members with the same key share one fetch container: the same role, Secret and endpoint
    (and claim, for pvc://), so no container holds credentials a member of another key uses."""
    uri = member.artifact.uri
    claim = uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else ""
    return (member.role, member.secret, member.endpoint, uri.split("://", 1)[0], claim)


def fetch_item(member: PoolMember) -> list[str]:
    """`mserve fetch`'s `--item URI DEST SHA256` for one member ('-': no digest)."""
    return ["--item", member.artifact.uri, f"{MODEL_DIR}/{member.name}.onnx", member.artifact.sha256 or "-"]


def _fetch_container(
    index: int, members: list[PoolMember], resources: dict, settings: OperatorSettings
) -> tuple[dict, StorageAccess]:
    """One init container (one process) fetching every member of one access group in turn."""
    access = StorageAccess()
    role = members[0].role
    args = ["fetch", "--role", role, "--max-bytes", str(settings.fetch_max_bytes)]
    for member in members:
        access.add_uri(
            member.artifact.uri, settings, role=member.role, secret=member.secret, endpoint=member.endpoint
        )
        args += fetch_item(member)
    tmp_mount = {"name": "tmp", "mountPath": "/tmp"}
    container = {
        "name": f"fetch-{index}",
        "image": fetch_image(settings),
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["mserve"],
        "args": args,
        "env": list(access.env),
        "resources": {side: dict(values) for side, values in resources.items()},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR}, tmp_mount, *access.mounts],
    }
    if access.env_from:
        container["envFrom"] = access.env_from
    return container, access


def build_pool_deployment(
    pool: Owner, spec: ModelPoolSpec, members: list[PoolMember], settings: OperatorSettings
) -> dict:
    """The pool's pods: one fetch init container per access group (members in name order), then
    the server."""
    members = sorted(members, key=lambda m: m.name)
    resources = resources_with_defaults(spec.resources, settings)
    tmp, tmp_mount = tmp_volume(settings.runtime_tmp_size_limit)
    volumes = [{"name": "models", "emptyDir": {"sizeLimit": str(settings.fetch_max_bytes)}}, tmp]
    groups: dict[tuple[str, ...], list[PoolMember]] = {}
    for member in members:
        groups.setdefault(access_group(member), []).append(member)
    fetches = []
    for index, group in enumerate(groups.values()):
        container, access = _fetch_container(index, group, resources, settings)
        fetches.append(container)
        volumes += [v for v in access.volumes if v not in volumes]

    env = {
        "MSERVE_POOL_DIR": MODEL_DIR,
        "MSERVE_HTTP_PORT": HTTP_PORT,
        "MSERVE_GRPC_PORT": GRPC_PORT,
        "MSERVE_ADMIN_PORT": ADMIN_PORT,
        "MSERVE_DEVICE": "cuda" if spec.uses_gpu else "cpu",
        "MSERVE_JSON_LOGS": str(settings.json_logs).lower(),
        "MSERVE_DRAIN_TIMEOUT_S": shutdown_budget(settings)[0],
    }
    if spec.memory_budget_bytes:
        env["MSERVE_POOL_MEMORY_BYTES"] = spec.memory_budget_bytes
    if spec.isolation == "Process":
        env["MSERVE_POOL_ISOLATION"] = "process"
    server_resources = {side: dict(values) for side, values in resources.items()}
    if spec.uses_gpu:
        server_resources["limits"][spec.gpu.resource_name or settings.gpu_resource_name] = str(spec.gpu.count)
    server = {
        **server_container(
            pool_image(spec, settings),
            ["serve", "--pool", MODEL_DIR],
            [{"name": k, "value": str(v)} for k, v in env.items()],
            server_resources,
            settings,
            tls=False,
        ),
        "volumeMounts": [{"name": "models", "mountPath": MODEL_DIR, "readOnly": True}, tmp_mount],
    }
    selector = pool_selector(pool.name)
    labels = pool_labels(pool.name)
    pod_spec: dict = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": shutdown_budget(settings)[1],
        "securityContext": pod_security_context(),
        "initContainers": fetches,
        "containers": [server],
        "volumes": volumes,
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": selector},
            }
        ],
        **gpu_scheduling(spec.gpu, settings),
    }
    annotations = {
        MEMBERS_ANNOTATION: members_digest(members),
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(ADMIN_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(pool, pool.name, labels),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "revisionHistoryLimit": 5,
            "progressDeadlineSeconds": 600,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec},
        },
    }


def build_member_service(member: Owner, pool: str) -> dict:
    """The member's own Service (same name, ports and URL as a dedicated one) in front of the
    pool's pods: clients do not change when a model moves into or out of a pool."""
    service = build_service(member)
    service["spec"]["selector"] = pool_selector(pool)
    return service


def pool_policy_name(pool: str) -> str:
    return f"{pool}.pool-ingress"  # a dot: no ModelService (a DNS label) takes this name


def build_pool_ingress_policy(
    pool: Owner, members: list[PoolMember], settings: OperatorSettings
) -> dict | None:
    """The pool pods' ingress: the serving ports from every member's allowed callers (the pods
    serve every member, so the policy is their union: network isolation is per pool, not per
    member), the admin port from the scraper. None when the install turned policies off."""
    if not settings.network_policy:
        return None
    peers: list[dict] = []
    for member in sorted(members, key=lambda m: m.name):
        if member.callers and member.callers not in peers:
            peers.append(member.callers)
    if not peers:  # no member yet: the pool's own namespace, as a member without access would get
        peers = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": pool.namespace}}}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(pool, pool_policy_name(pool.name), pool_labels(pool.name)),
        "spec": {
            "podSelector": {"matchLabels": pool_selector(pool.name)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": serving_ports()}, *scraper_rules(settings)],
        },
    }
