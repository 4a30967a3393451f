"""A ModelService's side of a pool: its Service over the pool's pods, and the hand-over between
its own Deployment and the pool in either direction without a lost request.

Moving in, the member's own pods keep serving (and its Service keeps selecting them) until
every ready pool pod lists the member as Loaded or Loadable (its sync sidecar fetched the
artifact, the server listed the file: the pool's status.memberStates, read from the pods'
metrics); only then does the Service select the pool and the own Deployment go (its pods drain:
preStop, then SIGTERM). The pool's pods are not replaced for this: the member list is a
ConfigMap they follow (builders/pool.py).
Moving out, the Service keeps selecting the pool until the own Deployment's pods are ready;
the pool keeps the member while its Service selects the pool (pool_reconcile.pool_members).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from mserve_operator import names
from mserve_operator.builders.pod import Owner
from mserve_operator.builders.pool import POOL_LABEL, build_member_service, pool_selector
from mserve_operator.conditions import READY, Condition, Reason
from mserve_operator.kube_api import KubeApi
from mserve_operator.ownership import OwnershipConflictError, controller_of, is_controlled_by
from mserve_operator.pool_spec import POOL_KIND
from mserve_operator.pool_status import FAILED, LOADABLE, LOADED
from mserve_operator.spec import API_GROUP, API_VERSION, ModelServiceSpec


@dataclass
class PoolServing:
    deployment: dict | None  # the Deployment whose pods serve the member now (pool's or its own)
    pods: list[dict] = field(default_factory=list)
    desired: int = 1
    conflicts: list[str] = field(default_factory=list)
    readiness: Condition | None = None  # Ready as the pool's pods report the model


def _member_state(pool: dict | None, member: str) -> dict:
    states = ((pool or {}).get("status") or {}).get("memberStates") or []
    return next((s for s in states if s.get("name") == member), {})


def _listed_everywhere(state: dict) -> bool:
    """Loaded or Loadable on every ready pool pod whose metrics were read (at least one)."""
    read = int(state.get("readyPods") or 0)
    return (
        state.get("state") in (LOADED, LOADABLE) and read >= 1 and int(state.get("listedPods") or 0) >= read
    )


def on_every_pool_pod(pool: dict | None, member: str) -> bool:
    """Whether every ready pool pod lists `member` as Loaded or Loadable, as the pool's status
    last read them: a ready pod whose metrics were not read may lack it, so then not."""
    pods = ((pool or {}).get("status") or {}).get("pods") or []
    unread = any(p.get("ready") and p.get("scrapeError") for p in pods)
    return not unread and _listed_everywhere(_member_state(pool, member))


def rolled_out(deployment: dict | None) -> bool:
    """Every pod of the current template is ready, and no pod of an older one is left."""
    if deployment is None:
        return False
    status = deployment.get("status") or {}
    desired = int((deployment.get("spec") or {}).get("replicas") or 0)
    generation = int(deployment["metadata"].get("generation") or 0)
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and int(status.get("updatedReplicas") or 0) == desired
        and int(status.get("replicas") or 0) == desired
        and int(status.get("readyReplicas") or 0) >= max(desired, 1)
    )


def selects_pool(service: dict | None) -> str:
    """The pool a Service selects, or ''."""
    selector = ((service or {}).get("spec") or {}).get("selector") or {}
    return selector.get(POOL_LABEL, "") if selector == pool_selector(selector.get(POOL_LABEL, "")) else ""


def keeps_pool_service(service: dict | None, deployment: dict | None) -> bool:
    """Leaving a pool: the Service keeps selecting it until the own pods are all ready."""
    return bool(selects_pool(service)) and not rolled_out(deployment)


def member_readiness(pool: dict | None, member: str) -> Condition | None:
    """From the ModelPool's status.memberStates; None when the pool has not read its pods yet."""
    state = _member_state(pool, member)
    if not state:
        return None
    message = state.get("message", "")
    if state.get("state") == LOADED:
        return Condition.of(READY, True, Reason.LOADED_IN_POOL, message)
    if state.get("state") == LOADABLE:
        return Condition.of(READY, True, Reason.LOADABLE_IN_POOL, message)
    if state.get("state") == FAILED:
        return Condition.of(READY, False, Reason.MODEL_LOAD_FAILED, message)
    return None


def not_in_pool_yet(pool: dict | None, member: str) -> Condition:
    state = _member_state(pool, member)
    listed, read = int(state.get("listedPods") or 0), int(state.get("readyPods") or 0)
    return Condition.of(
        READY,
        False,
        Reason.NOT_IN_POOL_YET,
        f"in the model directory of {listed} of {read} ready pool pods (metrics read) yet: its artifact "
        "is being fetched, or its fetch fails (the log of a pool pod's sync-* container names the "
        "member and the reason)",
    )


def serve_in_pool(
    api: KubeApi,
    spec: ModelServiceSpec,
    owner: Owner,
    apply_owned: Callable[[dict, Owner], dict],
    delete_owned: Callable[[str, str, Owner], None],
) -> PoolServing:
    """A member's side: its own Deployment until every ready pool pod lists the member, then
    the pool's, with the member's readiness from the pool's status."""
    pool = spec.serving.pool
    deployment = api.get("apps/v1", "Deployment", owner.namespace, pool)
    if deployment is not None and (controller_of(deployment) or {}).get("kind") != POOL_KIND:
        deployment = None
    # listed, not read by name: the operator's role has list and watch on ModelPools, not get
    pools = api.list(f"{API_GROUP}/{API_VERSION}", POOL_KIND, owner.namespace, {})
    pool_object = next((p for p in pools if p["metadata"]["name"] == pool), None)
    own = api.get("apps/v1", "Deployment", owner.namespace, owner.name)
    if own is not None and (not is_controlled_by(own, owner) or own["metadata"].get("deletionTimestamp")):
        own = None
    if own is not None and not (deployment is not None and on_every_pool_pod(pool_object, owner.name)):
        own_pods = names.selector_labels(owner.name, names.COMPONENT_RUNTIME)
        pods = api.list("v1", "Pod", owner.namespace, own_pods)
        desired = int((own.get("spec") or {}).get("replicas") or 1)
        return PoolServing(own, pods, desired)
    serving = PoolServing(None)
    try:
        apply_owned(build_member_service(owner, pool), owner)
    except OwnershipConflictError as exc:
        serving.conflicts.append(str(exc))
    else:
        for api_version, kind in (
            ("apps/v1", "Deployment"),
            ("autoscaling/v2", "HorizontalPodAutoscaler"),
            ("policy/v1", "PodDisruptionBudget"),
        ):
            delete_owned(api_version, kind, owner)
    if deployment is None:
        return serving
    serving.deployment = deployment
    serving.pods = api.list("v1", "Pod", owner.namespace, pool_selector(pool))
    serving.desired = int((deployment.get("spec") or {}).get("replicas") or 1)
    readiness = member_readiness(pool_object, owner.name)
    state = _member_state(pool_object, owner.name)
    if _listed_everywhere(state) or (readiness is not None and readiness.reason == Reason.MODEL_LOAD_FAILED):
        serving.readiness = readiness
    else:  # a pod without the file answers 404: not Ready until every ready pod has it
        serving.readiness = not_in_pool_yet(pool_object, owner.name)
    return serving
