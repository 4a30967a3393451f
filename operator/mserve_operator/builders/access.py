"""What `spec.access` and `spec.serving.tls` add to a runtime pod, and the identity it runs as.

The runtime reads its access settings from the environment (`MSERVE_AUTH`, ...) and its
keys and certificate from mounted Secrets. Secrets are mounted as whole volumes, never with
subPath: the kubelet then swaps their files in place when a Secret changes, so a rotated
key or a renewed certificate reaches the running server without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mserve_operator import names
from mserve_operator.builders.pod import Owner, metadata
from mserve_operator.spec import ModelServiceSpec

API_KEYS_DIR = "/var/run/mserve/api-keys"
TLS_DIR = "/var/run/mserve/tls"
# Callers ask the API server for a token with this audience (`kubectl create token --audience`).
TOKEN_AUDIENCE = "mserve"
# The built-in ClusterRole that allows `create tokenreviews` and `create subjectaccessreviews`.
AUTH_DELEGATOR_ROLE = "system:auth-delegator"
# group-readable: the pod's fsGroup owns the files, the server runs in that group
SECRET_FILE_MODE = 0o440


@dataclass
class AccessPod:
    """Env, volumes and mounts of the server container for one spec."""

    env: dict[str, str] = field(default_factory=dict)
    volumes: list[dict] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)
    tls: bool = False
    service_account: str = ""  # empty: the namespace's default, without a token


def _secret_volume(volume: str, secret: str, mount_path: str) -> tuple[dict, dict]:
    return (
        {"name": volume, "secret": {"secretName": secret, "defaultMode": SECRET_FILE_MODE}},
        {"name": volume, "mountPath": mount_path, "readOnly": True},
    )


def access_pod(spec: ModelServiceSpec, owner: Owner, *, docs_ui: bool) -> AccessPod:
    access = spec.access
    pod = AccessPod(env={"MSERVE_AUTH": access.authentication, "MSERVE_DOCS_UI": str(docs_ui).lower()})
    if access.authentication == "apiKey":
        pod.env["MSERVE_API_KEYS_DIR"] = API_KEYS_DIR
        for index, secret in enumerate(access.api_key_secrets):
            # The folder carries the Secret's name: the runtime names keys <secret>/<entry>.
            volume, mount = _secret_volume(f"api-keys-{index}", secret, f"{API_KEYS_DIR}/{secret}")
            pod.volumes.append(volume)
            pod.mounts.append(mount)
    if access.authentication == "kubernetes":
        pod.env["MSERVE_ALLOWED_SERVICE_ACCOUNTS"] = ",".join(access.allowed_service_accounts)
        pod.env["MSERVE_TOKEN_AUDIENCE"] = TOKEN_AUDIENCE
        pod.service_account = service_account_name(owner)
    rate = access.rate_limit
    if rate.requests_per_second > 0:
        pod.env["MSERVE_RATE_LIMIT_RPS"] = f"{rate.requests_per_second:g}"
        pod.env["MSERVE_RATE_LIMIT_BURST"] = str(rate.effective_burst)
    if spec.serving.tls is not None:
        volume, mount = _secret_volume("tls", spec.serving.tls.secret_name, TLS_DIR)
        pod.volumes.append(volume)
        pod.mounts.append(mount)
        pod.env["MSERVE_TLS_CERT_FILE"] = f"{TLS_DIR}/tls.crt"
        pod.env["MSERVE_TLS_KEY_FILE"] = f"{TLS_DIR}/tls.key"
        pod.tls = True
    return pod


def service_account_name(owner: Owner) -> str:
    return f"{owner.name}-mserve"[:253]


def token_review_binding_name(owner: Owner) -> str:
    """Cluster-scoped, so the namespace is part of the name."""
    return f"mserve:{owner.namespace}:{owner.name}:token-review"


def build_service_account(spec: ModelServiceSpec, owner: Owner) -> dict | None:
    """The runtime's own identity, for its TokenReviews; None unless authentication is kubernetes."""
    if spec.access.authentication != "kubernetes":
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(
            owner, service_account_name(owner), names.labels(owner.name, names.COMPONENT_RUNTIME)
        ),
    }


def binding_labels(owner: Owner) -> dict[str, str]:
    """A cluster-scoped object cannot be owned by a namespaced one: these labels find it again."""
    return {
        **names.labels(owner.name, names.COMPONENT_RUNTIME),
        names.MODELSERVICE_NAMESPACE_LABEL: owner.namespace,
        names.MODELSERVICE_UID_LABEL: owner.uid,
    }


def build_token_review_binding(spec: ModelServiceSpec, owner: Owner) -> dict | None:
    """Lets the runtime's ServiceAccount validate callers' tokens; None without kubernetes authentication."""
    if spec.access.authentication != "kubernetes":
        return None
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": token_review_binding_name(owner), "labels": binding_labels(owner)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": AUTH_DELEGATOR_ROLE,
        },
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account_name(owner), "namespace": owner.namespace}
        ],
    }
