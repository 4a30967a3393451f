"""Names and labels of the objects a ModelService owns."""

from __future__ import annotations

MANAGED_BY = "mserve-operator"
FIELD_MANAGER = "mserve-operator"
MODELSERVICE_LABEL = "mserve.io/modelservice"
# On cluster-scoped children (no ownerReference possible): whose they are.
MODELSERVICE_NAMESPACE_LABEL = "mserve.io/modelservice-namespace"
MODELSERVICE_UID_LABEL = "mserve.io/modelservice-uid"
SPEC_DIGEST_LABEL = "mserve.io/optimization-digest"
ARTIFACT_ANNOTATION = "mserve.io/artifact-sha256"
COMPONENT_RUNTIME = "runtime"
COMPONENT_OPTIMIZER = "optimizer"
# A canary's pods: never selected by the stable Service, whose selector names COMPONENT_RUNTIME.
COMPONENT_CANARY = "canary"

# A Job's name ends up in its pods' `job-name` label, which allows 63 characters.
_MAX_LABEL_VALUE = 63


def job_name(modelservice: str, spec_digest: str) -> str:
    suffix = f"-opt-{spec_digest[:10]}"
    return modelservice[: _MAX_LABEL_VALUE - len(suffix)].rstrip("-") + suffix


def selector_labels(modelservice: str, component: str) -> dict[str, str]:
    """The immutable part: a Deployment's selector may never change."""
    return {MODELSERVICE_LABEL: modelservice, "app.kubernetes.io/component": component}


def labels(modelservice: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "mserve",
        "app.kubernetes.io/instance": modelservice,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "mserve",
        **selector_labels(modelservice, component),
    }


def managed_selector() -> str:
    return f"app.kubernetes.io/managed-by={MANAGED_BY}"


def egress_policy_name(modelservice: str) -> str:
    return f"{modelservice}-optimizer-egress"


def ingress_policy_name(modelservice: str) -> str:
    return f"{modelservice}-ingress"


def canary_name(modelservice: str) -> str:
    """The canary's Deployment and Service."""
    return f"{modelservice}-canary"


def rollout_config_name(modelservice: str) -> str:
    """The ConfigMap holding the rollout file the stable pods read."""
    return f"{modelservice}-rollout"


def canary_ingress_policy_name(modelservice: str) -> str:
    return f"{modelservice}-canary-ingress"
