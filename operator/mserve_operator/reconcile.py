"""One level-triggered reconcile of one ModelService: observe, decide (pure modules), apply, report.

Safe to run any number of times, at any moment, in any process: the Job is named by the
spec digest and created only if absent, the rest is server-side applied, and the status is
written only when it changed.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from mserve_operator import canary, canary_rollout, conditions, names, revisions
from mserve_operator.artifact import Artifact
from mserve_operator.builders import (
    build_deployment,
    build_hpa,
    build_ingress_policy,
    build_job,
    build_optimizer_egress_policy,
    build_pdb,
    build_service,
    build_service_account,
    build_token_review_binding,
    service_url,
)
from mserve_operator.builders.access import binding_labels, service_account_name, token_review_binding_name
from mserve_operator.builders.canary import mount_rollout_file
from mserve_operator.builders.pod import Owner
from mserve_operator.builders.store import artifact_store
from mserve_operator.conditions import Reason
from mserve_operator.images import image_refusal
from mserve_operator.kube_api import KubeApi
from mserve_operator.optimization import OptimizationState, decide_optimization
from mserve_operator.ownership import OwnershipConflictError, check_controlled, is_controlled_by
from mserve_operator.pool_member import keeps_pool_service, serve_in_pool
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec, parse_spec
from mserve_operator.spec_digest import spec_digest
from mserve_operator.status import Observation, compute

# emit(body, type, reason, message): posts a Kubernetes Event about the ModelService.
EventSink = Callable[[dict, str, str, str], None]

_RUNTIME_SELECTOR = names.selector_labels


@dataclass(frozen=True)
class ReconcileResult:
    phase: str
    status_changed: bool
    job_created: bool
    canary_active: bool = False  # a canary is under way: reconcile again within seconds


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finished(job: dict) -> bool:
    return any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


class Reconciler:
    def __init__(self, api: KubeApi, settings: OperatorSettings, emit: EventSink) -> None:
        self.api = api
        self.settings = settings
        self.emit = emit
        self.canary = canary_rollout.CanaryRollout(api, settings, self._apply_owned, self._delete_owned)

    def reconcile(self, body: dict) -> ReconcileResult:
        owner = Owner.from_body(body)
        generation = int(body["metadata"].get("generation") or 0)
        status = dict(body.get("status") or {})
        try:
            spec = parse_spec(body.get("spec") or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            message = f"spec.{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
            observation = Observation(
                generation, None, None, None, invalid_spec=message, revisions=status.get("revisions")
            )
            return self._report(body, status, observation, job_created=False)
        refusal = image_refusal(spec, self.settings)
        if refusal:
            observation = Observation(
                generation,
                None,
                None,
                None,
                invalid_spec=refusal,
                invalid_reason=Reason.IMAGE_NOT_ALLOWED,
                revisions=status.get("revisions"),
            )
            return self._report(body, status, observation, job_created=False)

        digest = spec_digest(spec)
        state, job_created = self._optimize(spec, owner, digest, status)
        served_before = Artifact.from_status(status.get("artifact") or {})
        served = state.artifact or served_before
        wanted = revisions.Wanted(
            digest, revisions.source_of(body.get("spec") or {}), state.terminal_failure, state.record
        )
        # A loop still running while the ModelService goes must not re-create what `forget` deleted.
        deleting = bool(body["metadata"].get("deletionTimestamp"))
        plan = None
        if not deleting and not spec.serving.pool and (spec.rollout.canary or status.get("canary")):
            history = status.get("revisions") or []
            numbered = revisions.record_revisions(history, wanted, served_before, _now())
            plan = self._canary_plan(spec, owner, status, state, served_before, numbered, generation)
            if spec.rollout.canary and served_before is not None:
                served = state.artifact if plan.promote and state.artifact is not None else served_before
            failed = (plan.status or {}).get("phase") == canary.ROLLED_BACK
            wanted = dataclasses.replace(wanted, canary_failed=failed and plan.status["specDigest"] == digest)
            if plan.event is not None:
                self.emit(body, *plan.event)
        history = revisions.record_revisions(status.get("revisions") or [], wanted, served, _now())
        deployment, pods, desired, conflicts = None, [], spec.serving.min_replicas, []
        model_ready = None
        binding = None if deleting else build_token_review_binding(spec, owner)
        if binding is not None:
            self.api.apply(binding)  # before the pods, whose first TokenReview needs it
        else:
            self.forget(owner)
        missing = self._missing_secret(spec, owner)
        if served is not None and missing:
            # The pods could not mount it: keep what serves now, say what is missing.
            deployment = self.api.get("apps/v1", "Deployment", owner.namespace, owner.name)
            if deployment is not None and not is_controlled_by(deployment, owner):
                deployment = None
        elif served is not None and spec.serving.pool:
            in_pool = serve_in_pool(self.api, spec, owner, self._apply_owned, self._delete_owned)
            deployment, pods, desired = in_pool.deployment, in_pool.pods, in_pool.desired
            conflicts, model_ready = in_pool.conflicts, in_pool.readiness
        elif served is not None:
            number = revisions.number_of(history, served.spec_digest)
            deployment, conflicts = self._serve(spec, owner, served, number)
        if plan is not None and deployment is not None:
            plan = dataclasses.replace(plan, status=self.canary.apply(spec, owner, plan))
        if deployment is not None and not spec.serving.pool:
            pods = self.api.list(
                "v1", "Pod", owner.namespace, _RUNTIME_SELECTOR(owner.name, names.COMPONENT_RUNTIME)
            )
            if spec.serving.autoscaling is not None:
                replicas = (deployment.get("spec") or {}).get("replicas")
                desired = spec.serving.autoscaling.min_replicas if replicas is None else int(replicas)
        observation = Observation(
            generation=generation,
            optimization=state,
            served=served,
            deployment=deployment,
            pods=pods,
            desired_replicas=desired,
            url=service_url(owner, self.settings.cluster_domain, tls=spec.serving.tls is not None),
            conflict=conflicts[0] if conflicts else "",
            missing_secret=missing,
            revisions=history,
            canary=plan.status if plan is not None else status.get("canary"),
            model_ready=model_ready,
        )
        result = self._report(body, status, observation, job_created=job_created)
        return dataclasses.replace(result, canary_active=plan is not None and plan.active)

    def _canary_plan(
        self,
        spec: ModelServiceSpec,
        owner: Owner,
        status: dict,
        state: OptimizationState,
        stable: Artifact | None,
        history: list[dict],
        generation: int,
    ) -> canary.Plan:
        candidate = state.artifact
        if stable is None or (candidate is not None and candidate.spec_digest == stable.spec_digest):
            candidate = None
        situation = canary.Situation(
            rollout=spec.rollout,
            generation=generation,
            stable_digest=stable.spec_digest if stable else "",
            stable_revision=revisions.number_of(history, stable.spec_digest) if stable else None,
            wanted_digest=state.spec_digest,
            wanted_revision=revisions.number_of(history, state.spec_digest),
            candidate=candidate,
            now=canary_rollout.now(),
        )
        return self.canary.plan(spec, owner, status.get("canary"), situation)

    def _optimize(
        self, spec: ModelServiceSpec, owner: Owner, digest: str, status: dict
    ) -> tuple[OptimizationState, bool]:
        job, job_pods, foreign = None, [], None
        if not spec.skips_optimization:
            job = self.api.get("batch/v1", "Job", owner.namespace, names.job_name(owner.name, digest))
            if job is not None and not is_controlled_by(job, owner):
                job, foreign = None, job  # its pods' reports are never read
            if job is not None:
                selector = {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
                pods = self.api.list("v1", "Pod", owner.namespace, selector)
                job_pods = [pod for pod in pods if is_controlled_by_job(pod, job)]
        prefix = artifact_store(spec, self.settings).output_for(owner.namespace, owner.name)
        state = decide_optimization(spec, owner.name, digest, status, job, job_pods, prefix)
        created = False
        try:
            if state.needs_job or (job is not None and not state.ok and not state.terminal_failure):
                # The egress policy is in place before the Job's pod starts, and kept while it runs.
                policy = build_optimizer_egress_policy(spec, owner, self.settings)
                if policy is not None:
                    self._apply_owned(policy, owner)
            if state.needs_job:
                if foreign is not None:
                    raise OwnershipConflictError(foreign, owner)
                _, created = self.api.create_if_absent(build_job(spec, owner, digest, self.settings))
        except OwnershipConflictError as exc:
            state = _conflicted(state, str(exc))
        self._cancel_obsolete_jobs(owner, digest)
        return state, created

    def _cancel_obsolete_jobs(self, owner: Owner, digest: str) -> None:
        """A running Job for an older spec only burns resources: its result would never be served."""
        jobs = self.api.list(
            "batch/v1", "Job", owner.namespace, names.selector_labels(owner.name, names.COMPONENT_OPTIMIZER)
        )
        for job in jobs:
            meta = job["metadata"]
            obsolete = meta.get("labels", {}).get(names.SPEC_DIGEST_LABEL) != digest
            mine = is_controlled_by(job, owner)
            if mine and obsolete and not _finished(job) and not meta.get("deletionTimestamp"):
                self.api.delete("batch/v1", "Job", owner.namespace, meta["name"], uid=meta["uid"])

    def _apply_owned(self, manifest: dict, owner: Owner) -> dict:
        """Server-side apply to an object that is absent or ours; OwnershipConflictError otherwise."""
        meta = manifest["metadata"]
        existing = check_controlled(
            self.api.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"]), owner
        )
        uid = existing["metadata"]["uid"] if existing else ""
        return self.api.apply(manifest, uid=uid)

    def _delete_owned(self, api_version: str, kind: str, owner: Owner, name: str = "") -> None:
        """Delete the child (by default named after the ModelService) if, and only if, it is ours."""
        name = name or owner.name
        existing = self.api.get(api_version, kind, owner.namespace, name)
        if existing is not None and is_controlled_by(existing, owner):
            self.api.delete(api_version, kind, owner.namespace, name, uid=existing["metadata"]["uid"])

    def _missing_secret(self, spec: ModelServiceSpec, owner: Owner) -> str:
        """Why the pods could not start, naming the first Secret the spec names that does not exist."""
        for field, secret in spec.secrets_to_mount:
            if self.api.get("v1", "Secret", owner.namespace, secret, metadata_only=True) is None:
                return f"Secret {owner.namespace}/{secret} (named in {field}) does not exist"
        return ""

    def forget(self, owner: Owner) -> None:
        """Delete what the ModelService has outside its namespace: the token-review binding, which
        is cluster-scoped and so not garbage-collected with it (on deletion, or when not needed)."""
        api_version, kind, name = (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            token_review_binding_name(owner),
        )
        existing = self.api.get(api_version, kind, "", name)
        labels = ((existing or {}).get("metadata") or {}).get("labels") or {}
        mine = binding_labels(owner)
        if existing is not None and all(
            labels.get(k) == mine[k] for k in (names.MODELSERVICE_LABEL, names.MODELSERVICE_NAMESPACE_LABEL)
        ):
            self.api.delete(api_version, kind, "", name, uid=existing["metadata"]["uid"])

    def _serve(
        self, spec: ModelServiceSpec, owner: Owner, served: Artifact, revision: int | None
    ) -> tuple[dict | None, list[str]]:
        """The Deployment as applied (None if someone else holds its name) and every conflict met."""
        store = artifact_store(spec, self.settings)
        deployment, conflicts = None, []
        children = [
            build_deployment(
                spec,
                owner,
                served,
                self.settings,
                store_secret=store.secret,
                store_endpoint=store.endpoint,
                revision=revision,
            ),
            build_service(owner),
        ]
        if spec.rollout.canary:
            children[0] = mount_rollout_file(children[0], owner)
        for kind, api_version, name, manifest in (
            ("HorizontalPodAutoscaler", "autoscaling/v2", owner.name, build_hpa(spec, owner)),
            ("PodDisruptionBudget", "policy/v1", owner.name, build_pdb(spec, owner)),
            (
                "NetworkPolicy",
                "networking.k8s.io/v1",
                names.ingress_policy_name(owner.name),
                build_ingress_policy(spec, owner, self.settings),
            ),
            ("ServiceAccount", "v1", service_account_name(owner), build_service_account(spec, owner)),
        ):
            if manifest is None:
                self._delete_owned(api_version, kind, owner, name)
            elif kind in ("NetworkPolicy", "ServiceAccount"):
                children.insert(0, manifest)  # in place before the pods that need them
            else:
                children.append(manifest)

        for manifest in children:
            if manifest["kind"] == "Service" and keeps_pool_service(
                self.api.get("v1", "Service", owner.namespace, owner.name), deployment
            ):
                continue  # leaving a pool: its pods serve until this Deployment's are all ready
            try:
                applied = self._apply_owned(manifest, owner)
            except OwnershipConflictError as exc:
                conflicts.append(str(exc))
                continue
            if manifest["kind"] == "Deployment":
                deployment = applied
        return deployment, conflicts

    def _report(
        self, body: dict, status: dict, observation: Observation, *, job_created: bool
    ) -> ReconcileResult:
        fields, current = compute(observation)
        # status.usage is written by the usage meter (usage_meter.py), not by the reconcile.
        status = {k: v for k, v in status.items() if k != "usage"}
        previous_conditions = status.get("conditions") or []
        merged = conditions.merge_conditions(previous_conditions, current, _now(), observation.generation)
        new_status = {**fields, "conditions": merged}
        changed = _differs(status, new_status)
        owner = Owner.from_body(body)
        if changed:
            self.api.patch_status(owner.namespace, owner.name, _status_patch(status, new_status))
        if job_created and observation.optimization is not None:
            self.emit(
                body, "Normal", "OptimizationStarted", f"created Job {observation.optimization.job_name}"
            )
        for condition in conditions.transitions(previous_conditions, merged):
            failing = condition["reason"] in conditions.FAILURE_REASONS
            kind = "Warning" if failing else "Normal"
            reason = condition["reason"]
            self.emit(
                body, kind, reason, f"{condition['type']}={condition['status']}: {condition['message']}"
            )
        before, after = status.get("revision"), new_status.get("revision")
        if after is not None and before != after:
            self.emit(body, "Normal", "RevisionServed", revisions.serving_message(before, after))
        if changed and status.get("phase") != new_status["phase"]:
            self.emit(
                body, "Normal", "PhaseChanged", f"{status.get('phase', 'None')} -> {new_status['phase']}"
            )
        return ReconcileResult(new_status["phase"], changed, job_created)


def _status_patch(old: dict, new: dict) -> dict:
    """A merge patch from `old` to `new`: it keeps what it does not name, so removals are explicit,
    also one level down (`artifact`, `optimization`: a key an older operator wrote goes)."""
    patch: dict = {k: None for k in old if k not in new}
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            value = {**{k: None for k in before if k not in value}, **value}
        patch[key] = value
    return patch


def is_controlled_by_job(pod: dict, job: dict) -> bool:
    """Only the Job's own pods speak for it: a pod that merely carries its label does not."""
    return any(
        ref.get("controller") and ref.get("uid") == job["metadata"].get("uid")
        for ref in pod["metadata"].get("ownerReferences") or []
    )


def _conflicted(state: OptimizationState, message: str) -> OptimizationState:
    return OptimizationState(
        state.spec_digest, state.job_name, False, Reason.CONFLICT, message, None, state.record
    )


def _differs(old: dict, new: dict) -> bool:
    return any(old.get(k) != v for k, v in new.items()) or any(k not in new for k in old)
