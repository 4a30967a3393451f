"""One level-triggered reconcile of one ModelPool, and the pool branch of a ModelService's.

A pool's members are the ModelServices of its namespace whose `spec.serving.pool` names it
and that have an artifact to serve. The pool applies its Deployment (builders/pool.py) and
reports members and ready pods; a member applies its own Service over the pool's pods,
removes its dedicated children, and takes its readiness from the pool's Deployment.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable

from pydantic import ValidationError

from mserve_operator.artifact import Artifact
from mserve_operator.builders.deployment import MODEL_DIR, artifact_role
from mserve_operator.builders.pod import SOURCE_ROLE, Owner
from mserve_operator.builders.pool import (
    PoolMember,
    build_member_service,
    build_pool_deployment,
    pool_owner,
    pool_selector,
)
from mserve_operator.builders.store import artifact_store
from mserve_operator.kube_api import KubeApi
from mserve_operator.ownership import OwnershipConflictError, check_controlled, controller_of
from mserve_operator.pool_spec import POOL_KIND, parse_pool_spec
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import API_GROUP, API_VERSION, KIND, ModelServiceSpec, parse_spec

EventSink = Callable[[dict, str, str, str], None]
_MSVC = f"{API_GROUP}/{API_VERSION}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _member(body: dict, spec: ModelServiceSpec, settings: OperatorSettings) -> PoolMember | None:
    artifact = Artifact.from_status((body.get("status") or {}).get("artifact") or {})
    if artifact is None:
        return None
    role = artifact_role(spec, artifact)
    if role == SOURCE_ROLE:
        return PoolMember(
            body["metadata"]["name"], artifact, role, spec.model.credentials_secret, settings.s3_endpoint
        )
    store = artifact_store(spec, settings)
    return PoolMember(body["metadata"]["name"], artifact, role, store.secret, store.endpoint)


def pool_members(
    api: KubeApi, namespace: str, pool: str, settings: OperatorSettings
) -> tuple[list[PoolMember], list[str]]:
    """The members with an artifact, and the names of all that name the pool (with or without)."""
    members, named = [], []
    for body in api.list(_MSVC, KIND, namespace, {}):
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError:
            continue
        if spec.serving.pool != pool or body["metadata"].get("deletionTimestamp"):
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
        try:
            existing = check_controlled(
                self.api.get("apps/v1", "Deployment", owner.namespace, owner.name), owner
            )
            uid = existing["metadata"]["uid"] if existing else ""
            deployment = self.api.apply(manifest, uid=uid)
        except OwnershipConflictError as exc:
            self._write(
                owner, old, {"observedGeneration": generation, "phase": "Failed", "message": str(exc)}
            )
            return "Failed", named
        ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
        phase = "Ready" if ready >= spec.replicas else "Deploying"
        waiting = sorted(set(named) - {m.name for m in members})
        message = f"{ready}/{spec.replicas} pool pods ready, {len(members)} members"
        if waiting:
            message += f"; waiting for an artifact: {', '.join(waiting[:10])}"
        status = {
            "observedGeneration": generation,
            "phase": phase,
            "message": message,
            "members": len(members),
            "memberNames": [m.name for m in sorted(members, key=lambda m: m.name)],
            "ready": f"{ready}/{spec.replicas}",
            "readyReplicas": ready,
            "memoryBudgetBytes": spec.memory_budget_bytes,
        }
        if old.get("phase") != phase:
            self.emit(body, "Normal", "PhaseChanged", f"{old.get('phase', 'None')} -> {phase}")
        self._write(owner, old, status)
        return phase, named

    def _write(self, owner: Owner, old: dict, status: dict) -> None:
        if any(old.get(k) != v for k, v in status.items()):
            self.api.patch_status(owner.namespace, owner.name, status, kind=POOL_KIND)


def fetches_member(deployment: dict, member: str, artifact: Artifact) -> bool:
    """Whether the Deployment's pod template loads `artifact` as `member`."""
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    wanted = [artifact.uri, f"{MODEL_DIR}/{member}.onnx"]
    for container in pod.get("initContainers") or []:
        args = container.get("args") or []
        if args[1:3] == wanted and (not artifact.sha256 or args[-2:] == ["--sha256", artifact.sha256]):
            return True
    return False


def serve_in_pool(
    api: KubeApi,
    spec: ModelServiceSpec,
    owner: Owner,
    served: Artifact,
    apply_owned: Callable[[dict, Owner], dict],
    delete_owned: Callable[[str, str, Owner], None],
) -> tuple[dict | None, list[dict], int, list[str]]:
    """A member's side: its Service over the pool's pods, no dedicated children.

    Returns the pool's Deployment (None until the pool has one whose pods load this member's
    artifact: readiness of pods without it says nothing about this model), its pods, the
    desired pod count and any conflict met.
    """
    for api_version, kind in (
        ("apps/v1", "Deployment"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
    ):
        delete_owned(api_version, kind, owner)
    conflicts = []
    try:
        apply_owned(build_member_service(owner, spec.serving.pool), owner)
    except OwnershipConflictError as exc:
        conflicts.append(str(exc))
    deployment = api.get("apps/v1", "Deployment", owner.namespace, spec.serving.pool)
    controller = controller_of(deployment) if deployment is not None else None
    if deployment is None or (controller or {}).get("kind") != POOL_KIND:
        return None, [], 1, conflicts
    if not fetches_member(deployment, owner.name, served):
        return None, [], 1, conflicts
    pods = api.list("v1", "Pod", owner.namespace, pool_selector(spec.serving.pool))
    desired = int((deployment.get("spec") or {}).get("replicas") or 1)
    return deployment, pods, desired, conflicts
