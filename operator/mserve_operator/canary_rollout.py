"""A canary in the cluster: observe (pods' metrics, the canary's readiness), let canary.py decide,
apply (the canary's children, the rollout file, a nudge to the stable pods).

The rollout file's generation counts up whenever its content changes; a stable pod has applied a
step's weight once its `mserve_rollout_generation` reaches the generation written for it.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable

from mserve_operator import canary, names
from mserve_operator.artifact import Artifact
from mserve_operator.builders.canary import (
    build_canary_deployment,
    build_canary_ingress_policy,
    build_canary_service,
    build_rollout_config,
    read_rollout_config,
    rollout_file,
)
from mserve_operator.builders.pod import Owner
from mserve_operator.builders.ports import ADMIN_PORT
from mserve_operator.builders.store import artifact_store
from mserve_operator.canary_gates import GateWindows, RolloutCounts, parse_rollout_counts
from mserve_operator.kube_api import KubeApi
from mserve_operator.pod_nudge import nudge, running
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec
from mserve_operator.usage_scrape import read_page

log = logging.getLogger(__name__)

# On a stable pod: the rollout file generation the operator last asked it to apply (pod_nudge.py).
NUDGE_ANNOTATION = "mserve.io/rollout-generation"

ApplyOwned = Callable[[dict, Owner], dict]
DeleteOwned = Callable[[str, str, Owner, str], None]


class CanaryRollout:
    def __init__(
        self, api: KubeApi, settings: OperatorSettings, apply_owned: ApplyOwned, delete_owned: DeleteOwned
    ) -> None:
        self.api = api
        self.settings = settings
        self.apply_owned = apply_owned
        self.delete_owned = delete_owned
        self.windows = GateWindows()

    def _counts(self, pods: list[dict]) -> tuple[dict[str, RolloutCounts], int]:
        """Each pod's counters, and how many pods could not be read."""
        counts, unread = {}, 0
        timeout = self.settings.usage_scrape_timeout_seconds
        for pod in pods:
            try:
                text = read_page(pod["status"]["podIP"], ADMIN_PORT, timeout)
                counts[pod["metadata"]["name"]] = parse_rollout_counts(text)
            except (OSError, ValueError) as exc:
                log.info(f"metrics of {pod['metadata']['name']} not read: {exc}")
                unread += 1
        return counts, unread

    def plan(
        self,
        spec: ModelServiceSpec,
        owner: Owner,
        previous: dict | None,
        situation: canary.Situation,
    ) -> canary.Plan:
        """Observe what the decision needs, decide, and keep the step's measurement window."""
        prev = previous or {}
        stable_pods, counts_stable, counts_canary = [], {}, {}
        if prev.get("phase") in canary.ACTIVE:
            stable_pods = running(
                self.api.list(
                    "v1", "Pod", owner.namespace, names.selector_labels(owner.name, names.COMPONENT_RUNTIME)
                )
            )
            canary_pods = running(
                self.api.list(
                    "v1", "Pod", owner.namespace, names.selector_labels(owner.name, names.COMPONENT_CANARY)
                )
            )
            counts_stable, unread = self._counts(stable_pods)
            counts_canary, _ = self._counts(canary_pods)
            written = int(prev.get("generation") or 0)
            applied = (
                bool(stable_pods)
                and not unread
                and all(c.generation >= written for c in counts_stable.values())
            )
            canary_deployment = self.api.get(
                "apps/v1", "Deployment", owner.namespace, names.canary_name(owner.name)
            )
            stable_deployment = self.api.get("apps/v1", "Deployment", owner.namespace, owner.name)
            stable_replicas = ((stable_deployment or {}).get("spec") or {}).get("replicas")
            key = canary.step_key(prev)
            figures = (
                self.windows.observe(owner.namespace, owner.name, key, counts_canary, counts_stable)
                if key
                else None
            )
            situation = canary.Situation(
                **{
                    **situation.__dict__,
                    "applied": applied,
                    "figures": figures,
                    "canary_ready": canary.rolled_out(canary_deployment, spec.serving.min_replicas),
                    "stable_rolled_out": canary.rolled_out(
                        stable_deployment, int(stable_replicas or spec.serving.min_replicas)
                    ),
                }
            )
        plan = canary.decide(prev, situation)
        key = canary.step_key(plan.status)
        if key and key != canary.step_key(prev):
            self.windows.observe(owner.namespace, owner.name, key, counts_canary, counts_stable)
        if key is None:
            self.windows.forget(owner.namespace, owner.name)
        return plan

    def apply(self, spec: ModelServiceSpec, owner: Owner, plan: canary.Plan) -> dict | None:
        """Make the cluster match the plan; the plan's status.canary with the generation written."""
        status = dict(plan.status) if plan.status else None
        if plan.canary_running and status:
            self._run_canary(spec, owner, status)
        if spec.rollout.canary:
            generation = self._write_rollout_file(spec, owner, status if plan.weight else None, plan.weight)
            if status is not None and status.get("phase") in canary.ACTIVE:
                status["generation"] = generation
        else:
            self.delete_owned("v1", "ConfigMap", owner, names.rollout_config_name(owner.name))
        if not plan.canary_running:
            self.delete_owned("apps/v1", "Deployment", owner, names.canary_name(owner.name))
            self.delete_owned("v1", "Service", owner, names.canary_name(owner.name))
            self.delete_owned(
                "networking.k8s.io/v1", "NetworkPolicy", owner, names.canary_ingress_policy_name(owner.name)
            )
        return status

    def _run_canary(self, spec: ModelServiceSpec, owner: Owner, status: dict) -> None:
        artifact = Artifact.from_status(status.get("artifact") or {})
        if artifact is None:
            return
        store = artifact_store(spec, self.settings)
        policy = build_canary_ingress_policy(spec, owner, self.settings)
        if policy is not None:
            self.apply_owned(policy, owner)
        self.apply_owned(
            build_canary_deployment(
                spec,
                owner,
                artifact,
                self.settings,
                store_secret=store.secret,
                store_endpoint=store.endpoint,
                revision=int(status.get("revision") or 0),
            ),
            owner,
        )
        self.apply_owned(build_canary_service(owner), owner)

    def _write_rollout_file(
        self, spec: ModelServiceSpec, owner: Owner, status: dict | None, weight: int
    ) -> int:
        """Write the file when its content changes (a new generation) and nudge the stable pods."""
        name = names.rollout_config_name(owner.name)
        current = read_rollout_config(self.api.get("v1", "ConfigMap", owner.namespace, name))
        generation = int(current.get("generation") or 0)
        revision = int(status["revision"]) if status and weight else None
        domain = self.settings.cluster_domain
        wanted = rollout_file(generation, spec, owner, domain, revision=revision, weight=weight, mirror=True)
        if current and current.get("canary") == wanted["canary"]:
            return generation
        generation += 1
        wanted["generation"] = generation
        self.apply_owned(build_rollout_config(owner, wanted), owner)
        self._nudge(owner, generation)
        return generation

    def _nudge(self, owner: Owner, generation: int) -> None:
        selector = names.selector_labels(owner.name, names.COMPONENT_RUNTIME)
        pods = self.api.list("v1", "Pod", owner.namespace, selector)
        nudge(self.api, owner.namespace, pods, NUDGE_ANNOTATION, str(generation))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)
