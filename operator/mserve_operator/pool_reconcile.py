"""One level-triggered reconcile of one ModelPool (a member's side is pool_member.py).

A pool's members are the ModelServices of its namespace that have an artifact to serve and
whose `spec.serving.pool` names it, or whose Service still selects its pods (a member moving
out, until its own pods are ready). The pool applies its NetworkPolicy, the ConfigMap listing
its members' artifacts and its Deployment (builders/pool.py), nudges its running pods when the
list changed (so that their sync sidecars see it now), reads each running pod's metrics
(pool_scrape.py) and reports members, ready pods, loaded models, memory, each member's state
and pod restarts (pool_status.py).
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from pydantic import ValidationError

from mserve_operator import conditions
from mserve_operator.artifact import Artifact
from mserve_operator.builders.deployment import artifact_role
from mserve_operator.builders.ingress import callers_peer
from mserve_operator.builders.pod import SOURCE_ROLE, Owner
from mserve_operator.builders.pool import (
    MEMBERS_ANNOTATION,
    PoolMember,
    build_members_config,
    build_pool_deployment,
    build_pool_ingress_policy,
    members_config_digest,
    pool_owner,
    pool_policy_name,
    pool_selector,
)
from mserve_operator.builders.ports import ADMIN_PORT
from mserve_operator.builders.store import artifact_store
from mserve_operator.kube_api import KubeApi
from mserve_operator.ownership import OwnershipConflictError, check_controlled, is_controlled_by
from mserve_operator.pod_nudge import nudge
from mserve_operator.pool_member import rolled_out, selects_pool
from mserve_operator.pool_scrape import PoolPodMetrics, scrape_pool_pod
from mserve_operator.pool_spec import POOL_KIND, parse_pool_spec
from mserve_operator.pool_status import pool_observation
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import API_GROUP, API_VERSION, KIND, ModelServiceSpec, parse_spec

EventSink = Callable[[dict, str, str, str], None]
# After the member list changed, the pods are read this often (not every usage interval) until
# each member is on every ready pod or this long has passed: members move in and turn Ready soon.
SETTLE_INTERVAL_S = 1.0
SETTLE_FOR_S = 60.0
_MSVC = f"{API_GROUP}/{API_VERSION}"


def _member(body: dict, spec: ModelServiceSpec, settings: OperatorSettings) -> PoolMember | None:
    artifact = Artifact.from_status((body.get("status") or {}).get("artifact") or {})
    if artifact is None:
        return None
    name, namespace = body["metadata"]["name"], body["metadata"]["namespace"]
    callers = callers_peer(spec, namespace)
    role = artifact_role(spec, artifact)
    if role == SOURCE_ROLE:
        return PoolMember(name, artifact, role, spec.model.credentials_secret, settings.s3_endpoint, callers)
    store = artifact_store(spec, settings)
    return PoolMember(name, artifact, role, store.secret, store.endpoint, callers)


def pool_members(
    api: KubeApi, namespace: str, pool: str, settings: OperatorSettings
) -> tuple[list[PoolMember], list[str]]:
    """The members with an artifact, and the names of all that name the pool (with or without)."""
    members, named = [], []
    services = {s["metadata"]["name"]: s for s in api.list("v1", "Service", namespace, {})}
    for body in api.list(_MSVC, KIND, namespace, {}):
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError:
            continue
        service = services.get(body["metadata"]["name"])
        leaving = service is not None and is_controlled_by(service, Owner.from_body(body))
        leaving = leaving and selects_pool(service) == pool
        if (spec.serving.pool != pool and not leaving) or body["metadata"].get("deletionTimestamp"):
            continue
        named.append(body["metadata"]["name"])
        member = _member(body, spec, settings)
        if member is not None:
            members.append(member)
    return members, sorted(named)


class PoolReconciler:
    def __init__(self, api: KubeApi, settings: OperatorSettings, emit: EventSink) -> None:
        self.api = api
        self.settings = settings
        self.emit = emit
        self._lists: dict[tuple[str, str], tuple[str, float]] = {}  # member list digest, when it changed
        self._settling: set[tuple[str, str]] = set()

    def settling(self, namespace: str, name: str) -> bool:
        """Whether the pool's member list changed lately and a member is not on every ready pod yet."""
        return (namespace, name) in self._settling

    def reconcile(self, body: dict) -> tuple[str, list[str]]:
        """Apply the pool's Deployment, write its status; the phase and the member names."""
        owner = pool_owner(body)
        generation = int(body["metadata"].get("generation") or 0)
        old = dict(body.get("status") or {})
        try:
            spec = parse_pool_spec(body.get("spec") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            message = f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            self._write(owner, old, {"observedGeneration": generation, "phase": "Failed", "message": message})
            return "Failed", []
        members, named = pool_members(self.api, owner.namespace, owner.name, self.settings)
        manifest = build_pool_deployment(owner, spec, members, self.settings)
        config = build_members_config(owner, members)
        policy = build_pool_ingress_policy(owner, members, self.settings)
        try:
            if policy is None:
                policy_name = pool_policy_name(owner.name)
                self._delete_owned("networking.k8s.io/v1", "NetworkPolicy", owner, policy_name)
            else:
                self._apply_owned(policy, owner)  # before the pods it guards
            self._apply_owned(config, owner)  # before the pods that mount it
            deployment = self._apply_owned(manifest, owner)
        except OwnershipConflictError as exc:
            self._write(
                owner, old, {"observedGeneration": generation, "phase": "Failed", "message": str(exc)}
            )
            return "Failed", named
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        phase = "Ready" if rolled_out(deployment) else "Deploying"
        pods = [
            p
            for p in self.api.list("v1", "Pod", owner.namespace, pool_selector(owner.name))
            if not p["metadata"].get("deletionTimestamp")
        ]
        digest = members_config_digest(config)
        nudge(self.api, owner.namespace, pods, MEMBERS_ANNOTATION, digest)
        key = (owner.namespace, owner.name)
        if self._lists.get(key, ("", 0.0))[0] != digest:
            self._lists[key] = (digest, time.monotonic())
        now = datetime.datetime.now(datetime.UTC)
        fields, stable, restarts = pool_observation(
            pods, self._scrape(pods), [m.name for m in members], old, now
        )
        recent = time.monotonic() - self._lists[key][1] < SETTLE_FOR_S
        unsettled = any(m["listedPods"] < m["readyPods"] for m in fields["memberStates"])
        if recent and unsettled:
            self._settling.add(key)
        else:
            self._settling.discard(key)
        waiting = sorted(set(named) - {m.name for m in members})
        failed = [m["name"] for m in fields["memberStates"] if m["state"] == "Failed"]
        message = f"{ready}/{spec.replicas} pool pods ready, {len(members)} members"
        if failed:
            message += f"; failed to load: {', '.join(failed[:10])}"
        if waiting:
            message += f"; waiting for an artifact: {', '.join(waiting[:10])}"
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        merged = conditions.merge_conditions(old.get("conditions") or [], [stable], stamp, generation)
        status = {
            "observedGeneration": generation,
            "phase": phase,
            "message": message,
            "members": len(members),
            "memberNames": [m.name for m in sorted(members, key=lambda m: m.name)],
            "ready": f"{ready}/{spec.replicas}",
            "readyReplicas": ready,
            "memoryBudgetBytes": spec.memory_budget_bytes,
            **fields,
            "conditions": merged,
        }
        if old.get("phase") != phase:
            self.emit(body, "Normal", "PhaseChanged", f"{old.get('phase', 'None')} -> {phase}")
        for restart in restarts:
            self.emit(body, "Warning", "PoolPodRestarted", restart.message)
        self._write(owner, old, status)
        return phase, named

    def _scrape(self, pods: list[dict]) -> dict[str, PoolPodMetrics | str]:
        """Each running pod's metrics, or why they could not be read."""
        scraped: dict[str, PoolPodMetrics | str] = {}
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if (pod.get("status") or {}).get("phase") != "Running" or not ip:
                continue
            try:
                scraped[pod["metadata"]["name"]] = scrape_pool_pod(
                    ip, ADMIN_PORT, self.settings.usage_scrape_timeout_seconds
                )
            except (OSError, ValueError) as exc:
                scraped[pod["metadata"]["name"]] = f"metrics not read: {exc}"
        return scraped

    def _apply_owned(self, manifest: dict, owner: Owner) -> dict:
        meta = manifest["metadata"]
        existing = check_controlled(
            self.api.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]), owner
        )
        return self.api.apply(manifest, uid=existing["metadata"]["uid"] if existing else "")

    def _delete_owned(self, api_version: str, kind: str, owner: Owner, name: str) -> None:
        existing = self.api.get(api_version, kind, owner.namespace, name)
        if existing is not None and is_controlled_by(existing, owner):
            self.api.delete(api_version, kind, owner.namespace, name, uid=existing["metadata"]["uid"])

    def _write(self, owner: Owner, old: dict, status: dict) -> None:
        if any(old.get(k) != v for k, v in status.items()):
            self.api.patch_status(owner.namespace, owner.name, status, kind=POOL_KIND)
