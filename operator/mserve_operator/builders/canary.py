"""A canary's children: its Deployment and Service beside the stable ones, the rollout file the
stable pods read their split from, and what the stable Deployment needs to read it.

No mesh: the stable runtime pods forward a share `weight` of inference requests to the canary's
Service and mirror a share `mirrorPercent` of the rest (docs/operator.md, "Canary rollouts"). Clients keep
calling the stable Service; it never selects a canary pod (its selector names the `runtime`
component, canary pods carry `canary`).
"""

from __future__ import annotations

import copy
import json

from mserve_operator import names
from mserve_operator.artifact import Artifact
from mserve_operator.builders.deployment import build_deployment
from mserve_operator.builders.ingress import build_ingress_policy
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.builders.ports import HTTP_PORT
from mserve_operator.builders.service import build_service
from mserve_operator.settings import OperatorSettings
from mserve_operator.spec import ModelServiceSpec

ROLLOUT_DIR = "/etc/mserve/rollout"
ROLLOUT_KEY = "rollout.json"
ROLLOUT_FILE = f"{ROLLOUT_DIR}/{ROLLOUT_KEY}"
ROLLOUT_VOLUME = "rollout"
# The cosine a mirrored comparison needs when spec.optimization.tolerance names none.
DEFAULT_COSINE = 0.99


def _as_canary(manifest: dict, owner: Owner) -> dict:
    """A stable child renamed `NAME-canary`, its labels and selectors naming the canary component."""
    canary = copy.deepcopy(manifest)
    canary["metadata"]["name"] = names.canary_name(owner.name)
    canary["metadata"]["labels"] = names.labels(owner.name, names.COMPONENT_CANARY)
    return canary


def build_canary_deployment(
    spec: ModelServiceSpec,
    owner: Owner,
    artifact: Artifact,
    settings: OperatorSettings,
    *,
    store_secret: str = "",
    store_endpoint: str = "",
    revision: int,
) -> dict:
    """The stable Deployment's pod (server container, access settings, fetch) serving `artifact`
    as `revision`, with the canary's labels. Replicas are the spec's minimum and no HPA: the canary
    answers a share of the traffic for minutes, its cost is bounded and known in advance."""
    stable = build_deployment(
        spec,
        owner,
        artifact,
        settings,
        store_secret=store_secret,
        store_endpoint=store_endpoint,
        revision=revision,
    )
    canary = _as_canary(stable, owner)
    selector = names.selector_labels(owner.name, names.COMPONENT_CANARY)
    deployment_spec = canary["spec"]
    deployment_spec["selector"] = {"matchLabels": selector}
    deployment_spec["replicas"] = spec.serving.min_replicas
    template = deployment_spec["template"]
    template["metadata"]["labels"] = names.labels(owner.name, names.COMPONENT_CANARY)
    for constraint in template["spec"].get("topologySpreadConstraints") or []:
        constraint["labelSelector"] = {"matchLabels": selector}
    return canary


def build_canary_service(owner: Owner) -> dict:
    service = _as_canary(build_service(owner), owner)
    service["spec"]["selector"] = names.selector_labels(owner.name, names.COMPONENT_CANARY)
    return service


def build_canary_ingress_policy(
    spec: ModelServiceSpec, owner: Owner, settings: OperatorSettings
) -> dict | None:
    """The stable policy's rules for the canary's pods, plus the stable pods on the HTTP port
    (they forward and mirror to it). None when the install turned runtime policies off."""
    policy = build_ingress_policy(spec, owner, settings)
    if policy is None:
        return None
    policy["metadata"]["name"] = names.canary_ingress_policy_name(owner.name)
    policy["metadata"]["labels"] = names.labels(owner.name, names.COMPONENT_CANARY)
    policy["spec"]["podSelector"] = {"matchLabels": names.selector_labels(owner.name, names.COMPONENT_CANARY)}
    policy["spec"]["ingress"].append(
        {
            "from": [
                {"podSelector": {"matchLabels": names.selector_labels(owner.name, names.COMPONENT_RUNTIME)}}
            ],
            "ports": [{"protocol": "TCP", "port": HTTP_PORT}],
        }
    )
    return policy


def canary_url(owner: Owner, cluster_domain: str) -> str:
    return f"http://{names.canary_name(owner.name)}.{owner.namespace}.svc.{cluster_domain}:{HTTP_PORT}"


def rollout_file(
    generation: int,
    spec: ModelServiceSpec,
    owner: Owner,
    cluster_domain: str,
    *,
    revision: int | None,
    weight: int,
    mirror: bool,
) -> dict:
    """The rollout file's content; `revision` None: no canary (no split, no mirror)."""
    if revision is None:
        return {"generation": generation, "canary": None}
    tolerance = spec.optimization.tolerance
    return {
        "generation": generation,
        "canary": {
            "url": canary_url(owner, cluster_domain),
            "revision": revision,
            "weight": weight,
            "mirrorPercent": spec.rollout.mirror_percent if mirror else 0,
            "tolerance": {
                "cosine": tolerance.cosine if tolerance.cosine is not None else DEFAULT_COSINE,
                "maxAbsError": tolerance.max_abs_error,
            },
        },
    }


def build_rollout_config(owner: Owner, content: dict) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(
            owner, names.rollout_config_name(owner.name), names.labels(owner.name, names.COMPONENT_RUNTIME)
        ),
        "data": {ROLLOUT_KEY: json.dumps(content, sort_keys=True)},
    }


def read_rollout_config(config: dict | None) -> dict:
    """What a rollout ConfigMap holds ({} when absent or unreadable)."""
    text = ((config or {}).get("data") or {}).get(ROLLOUT_KEY) or ""
    try:
        content = json.loads(text)
    except ValueError:
        return {}
    return content if isinstance(content, dict) else {}


def mount_rollout_file(deployment: dict, owner: Owner) -> dict:
    """The stable Deployment reading the rollout file: the ConfigMap volume (optional, so a pod
    starts before the operator wrote it) and MSERVE_ROLLOUT_FILE. Mounted whenever the strategy is
    Canary, not only during a canary, so that starting one does not restart the stable pods."""
    deployment = copy.deepcopy(deployment)
    pod = deployment["spec"]["template"]["spec"]
    pod["volumes"].append(
        {
            "name": ROLLOUT_VOLUME,
            "configMap": {"name": names.rollout_config_name(owner.name), "optional": True},
        }
    )
    server = next(c for c in pod["containers"] if c["name"] == "server")
    server["volumeMounts"].append({"name": ROLLOUT_VOLUME, "mountPath": ROLLOUT_DIR, "readOnly": True})
    server["env"].append({"name": "MSERVE_ROLLOUT_FILE", "value": ROLLOUT_FILE})
    return deployment
