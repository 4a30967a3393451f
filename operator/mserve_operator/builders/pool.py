"""A ModelPool's children: the ConfigMap listing its members' artifacts, the Deployment of
`mserve serve --pool` pods, and for each member a Service of the member's own name that selects
the pool's pods.

The pods keep every member's artifact in one directory, named by the member, which the server
serves as its model repository: one native sidecar (`mserve fetch --sync`, one process) per
group of members that use the same storage access, each reading only its group's list from the
ConfigMap, so twenty members in the install's store are one process, and no container holds a
Secret that a member it fetches does not use. The pod template depends on the set of access
groups only: a member joining, leaving or changing its artifact changes the ConfigMap, which
the running pods' sidecars follow, and no pod restarts.
"""

from __future__ import annotations

import hashlib
import json
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
# On a running pool pod: the member list's digest the operator last wrote (pod_nudge.py).
MEMBERS_ANNOTATION = "mserve.io/pool-members-sha256"
MEMBERS_DIR = "/etc/mserve/members"
# A sidecar is a small process streaming files: it adds this to the pod's requests, not the server's.
SYNC_RESOURCES = {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
# Its first pass may fetch many members: the server waits for it this long before the kubelet restarts it.
SYNC_FIRST_PASS_S = 3600


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


def access_group(member: PoolMember) -> tuple[str, ...]:
    """Members with the same key share one fetch container: the same role, Secret and endpoint
    (and claim, for pvc://), so no container holds credentials a member of another key uses."""
    uri = member.artifact.uri
    claim = uri.removeprefix("pvc://").split("/", 1)[0] if uri.startswith("pvc://") else ""
    return (member.role, member.secret, member.endpoint, uri.split("://", 1)[0], claim)


def group_id(key: tuple[str, ...]) -> str:
    """A stable short name for an access group: its ConfigMap key, sidecar and volume names."""
    return hashlib.sha256("\0".join(key).encode()).hexdigest()[:10]


def members_config_name(pool: str) -> str:
    return f"{pool}.pool-members"  # a dot: no ModelService (a DNS label) takes this name


def member_entry(member: PoolMember) -> dict[str, str]:
    """One item of `mserve fetch --sync`'s list ('-': no digest)."""
    sha256 = member.artifact.sha256 or "-"
    return {"name": member.name, "uri": member.artifact.uri, "file": f"{member.name}.onnx", "sha256": sha256}


def groups_of(members: list[PoolMember]) -> dict[str, list[PoolMember]]:
    """Members (name order) by access group id, the groups in id order."""
    groups: dict[str, list[PoolMember]] = {}
    for member in sorted(members, key=lambda m: m.name):
        groups.setdefault(group_id(access_group(member)), []).append(member)
    return dict(sorted(groups.items()))


def build_members_config(pool: Owner, members: list[PoolMember]) -> dict:
    """The members' artifacts, one JSON list per access group (`<group id>.json`)."""
    data = {
        f"{gid}.json": json.dumps([member_entry(m) for m in group], sort_keys=True)
        for gid, group in groups_of(members).items()
    }
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(pool, members_config_name(pool.name), pool_labels(pool.name)),
        "data": data,
    }


def members_config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config.get("data") or {}, sort_keys=True).encode()).hexdigest()


def sync_state_file(gid: str) -> str:
    return f"{MODEL_DIR}/.sync-{gid}.json"  # hidden: the server's listing skips it


def _sync_container(gid: str, member: PoolMember, pool: str, settings: OperatorSettings) -> tuple[dict, list]:
    """One native sidecar (an init container that keeps running) keeping one access group's
    members in the models directory; the server starts once its first pass is done."""
    access = StorageAccess()
    access.add_uri(
        member.artifact.uri, settings, role=member.role, secret=member.secret, endpoint=member.endpoint
    )
    list_volume = {
        "name": f"members-{gid}",
        "configMap": {
            "name": members_config_name(pool),
            "items": [{"key": f"{gid}.json", "path": "members.json"}],
        },
    }
    list_dir = f"{MEMBERS_DIR}-{gid}"
    state = sync_state_file(gid)
    args = ["fetch", "--role", member.role, "--max-bytes", str(settings.fetch_max_bytes)]
    args += ["--sync", f"{list_dir}/members.json", "--into", MODEL_DIR, "--state", state]
    container = {
        "name": f"sync-{gid}",
        "image": fetch_image(settings),
        "imagePullPolicy": settings.image_pull_policy,
        "restartPolicy": "Always",
        "command": ["mserve"],
        "args": args,
        "env": [*access.env, {"name": "MSERVE_JSON_LOGS", "value": str(settings.json_logs).lower()}],
        "resources": {side: dict(values) for side, values in SYNC_RESOURCES.items()},
        "startupProbe": {
            "exec": {"command": ["mserve", "fetch", "--state", state]},
            "periodSeconds": 1,
            "timeoutSeconds": 5,
            "failureThreshold": SYNC_FIRST_PASS_S,
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": container_security_context(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODEL_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": list_volume["name"], "mountPath": list_dir, "readOnly": True},
            *access.mounts,
        ],
    }
    if access.env_from:
        container["envFrom"] = access.env_from
    return container, [list_volume, *access.volumes]


def build_pool_deployment(
    pool: Owner, spec: ModelPoolSpec, members: list[PoolMember], settings: OperatorSettings
) -> dict:
    """The pool's pods: one sync sidecar per access group, then the server. Which members a
    group holds is in the ConfigMap (build_members_config), never in this template."""
    resources = resources_with_defaults(spec.resources, settings)
    tmp, tmp_mount = tmp_volume(settings.runtime_tmp_size_limit)
    volumes = [{"name": "models", "emptyDir": {"sizeLimit": str(settings.fetch_max_bytes)}}, tmp]
    fetches = []
    for gid, group in groups_of(members).items():
        container, group_volumes = _sync_container(gid, group[0], pool.name, settings)
        fetches.append(container)
        volumes += [v for v in group_volumes if v not in volumes]

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
