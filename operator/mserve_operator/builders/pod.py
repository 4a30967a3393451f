"""Pieces every pod the operator creates shares: ownership, security, storage access."""

from __future__ import annotations

from dataclasses import dataclass, field

from mserve_operator.settings import OperatorSettings

# Any fixed non-root id works: the images need no particular user, only writable emptyDirs.
RUN_AS_ID = 65532


@dataclass(frozen=True)
class Owner:
    """The ModelService that owns a child: enough for its ownerReference and its namespace."""

    name: str
    namespace: str
    uid: str
    api_version: str = "mserve.io/v1alpha1"
    kind: str = "ModelService"

    @classmethod
    def from_body(cls, body: dict) -> Owner:
        meta = body["metadata"]
        return cls(name=meta["name"], namespace=meta["namespace"], uid=meta["uid"])

    def reference(self) -> dict:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def metadata(
    owner: Owner, name: str, labels: dict[str, str], annotations: dict[str, str] | None = None
) -> dict:
    meta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels,
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


def pod_security_context() -> dict:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_ID,
        "runAsGroup": RUN_AS_ID,
        "fsGroup": RUN_AS_ID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict:
    """Pod Security Standards 'restricted', plus a read-only root filesystem."""
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def tmp_volume(size_limit: str) -> tuple[dict, dict]:
    """A writable /tmp (the root filesystem is read-only), bounded so it cannot fill the node."""
    return {"name": "tmp", "emptyDir": {"sizeLimit": size_limit}}, {"name": "tmp", "mountPath": "/tmp"}


SOURCE_ROLE = "source"
STORE_ROLE = "store"
# `mserve fetch --role R` and the optimizer read only the variables under R's prefix, so the
# source's and the store's credentials never mix, whatever keys either Secret holds.
ROLE_ENV_PREFIX = {SOURCE_ROLE: "MSERVE_SOURCE_", STORE_ROLE: "MSERVE_STORE_"}


@dataclass
class StorageAccess:
    """Env and volumes a container needs to read (or write) the URIs it is given, per role."""

    env: list[dict] = field(default_factory=list)
    env_from: list[dict] = field(default_factory=list)
    volumes: list[dict] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)

    def add_uri(
        self,
        uri: str,
        settings: OperatorSettings,
        *,
        role: str,
        secret: str = "",
        endpoint: str = "",
        writable: bool = False,
    ) -> None:
        prefix = ROLE_ENV_PREFIX[role]
        if uri.startswith("s3://"):
            self._add_secret(prefix, secret)
            if endpoint:
                self._set_env(f"{prefix}AWS_ENDPOINT_URL", endpoint)
            self._set_env(f"{prefix}AWS_REGION", settings.s3_region)
        elif uri.startswith("pvc://"):
            self._add_pvc(uri, settings, writable)
        elif uri.startswith(("http://", "https://")):
            self._add_secret(prefix, secret)

    def _add_secret(self, prefix: str, secret: str) -> None:
        ref = {"prefix": prefix, "secretRef": {"name": secret}}
        if secret and ref not in self.env_from:
            self.env_from.append(ref)

    def _set_env(self, name: str, value: str) -> None:
        if not any(e["name"] == name for e in self.env):
            self.env.append({"name": name, "value": value})

    def _add_pvc(self, uri: str, settings: OperatorSettings, writable: bool) -> None:
        claim = uri.removeprefix("pvc://").split("/", 1)[0]
        volume_name = f"pvc-{claim}"[:63].rstrip("-")
        self._set_env("MSERVE_PVC_ROOT", settings.pvc_root)
        for mount in self.mounts:
            if mount["name"] == volume_name:
                mount["readOnly"] = mount["readOnly"] and not writable
                return
        self.volumes.append({"name": volume_name, "persistentVolumeClaim": {"claimName": claim}})
        self.mounts.append(
            {
                "name": volume_name,
                "mountPath": f"{settings.pvc_root.rstrip('/')}/{claim}",
                "readOnly": not writable,
            }
        )
