"""The few Kubernetes API calls the operator makes, on plain JSON dicts.

Server-side apply (field manager `mserve-operator`) for everything the operator keeps in
shape, create-if-absent for Jobs (immutable, named by digest), merge patches for status.
"""

from __future__ import annotations

import json
import os
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException

from mserve_operator.names import FIELD_MANAGER
from mserve_operator.spec import API_GROUP, API_VERSION, PLURAL

# apiVersion, kind -> plural resource name, for the kinds the operator owns.
PLURALS = {
    ("batch/v1", "Job"): "jobs",
    ("apps/v1", "Deployment"): "deployments",
    ("v1", "Service"): "services",
    ("v1", "Pod"): "pods",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "horizontalpodautoscalers",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudgets",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicies",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "ConfigMap"): "configmaps",
    ("v1", "Secret"): "secrets",
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): "clusterrolebindings",
    (f"{API_GROUP}/{API_VERSION}", "ModelService"): PLURAL,
    (f"{API_GROUP}/{API_VERSION}", "ModelPool"): "modelpools",
}


# Only the metadata of a Secret: the operator checks that a named one exists, never reads its data.
METADATA_ONLY = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"


def resource_path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    """A namespaced resource's path; an empty namespace is a cluster-scoped kind's."""
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    scope = f"{prefix}/namespaces/{namespace}" if namespace else prefix
    path = f"{scope}/{PLURALS[(api_version, kind)]}"
    return f"{path}/{name}" if name else path


def load_client_config() -> kubernetes.client.Configuration:
    """In-cluster service account if there is one, else the kubeconfig ($KUBECONFIG)."""
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    except kubernetes.config.ConfigException:
        # $KUBECONFIG read now: the client library reads it once, at import.
        kubernetes.config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG"), client_configuration=configuration
        )
    # Reconciles run in a thread pool; the default pool of 4 connections would serialize them.
    configuration.connection_pool_maxsize = 32
    return configuration


class KubeApi:
    def __init__(self, configuration: kubernetes.client.Configuration | None = None) -> None:
        self._client = kubernetes.client.ApiClient(configuration or load_client_config())

    def close(self) -> None:
        self._client.close()

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: list | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict:
        method, url, headers, body, _ = self._client.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params={"Accept": accept, "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(method, url, header_params=headers, body=body, _request_timeout=30)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException.from_response(http_resp=response, body=response.data.decode(), data=None)
        return json.loads(response.data) if response.data else {}

    def get(
        self, api_version: str, kind: str, namespace: str, name: str, *, metadata_only: bool = False
    ) -> dict | None:
        try:
            return self._call(
                "GET",
                resource_path(api_version, kind, namespace, name),
                accept=METADATA_ONLY if metadata_only else "application/json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, kind: str, namespace: str, selector: dict[str, str]) -> list[dict]:
        label_selector = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        result = self._call(
            "GET", resource_path(api_version, kind, namespace), query=[("labelSelector", label_selector)]
        )
        return result.get("items") or []

    def apply(self, manifest: dict, *, uid: str = "") -> dict:
        """Server-side apply; forcing reclaims fields someone else changed by hand (drift repair).

        With `uid`, the apply succeeds only on that very object (the API server refuses to
        change an object's uid): one replaced since it was read is never taken over.
        """
        meta = manifest["metadata"]
        if uid:
            manifest = {**manifest, "metadata": {**meta, "uid": uid}}
        path = resource_path(
            manifest["apiVersion"], manifest["kind"], meta.get("namespace", ""), meta["name"]
        )
        return self._call(
            "PATCH",
            path,
            query=[("fieldManager", FIELD_MANAGER), ("force", "true")],
            body=manifest,  # sent as JSON, which is YAML
            content_type="application/apply-patch+yaml",
        )

    def create_if_absent(self, manifest: dict) -> tuple[dict, bool]:
        """The object, and whether this call created it; an existing one is left as it is."""
        meta = manifest["metadata"]
        path = resource_path(manifest["apiVersion"], manifest["kind"], meta["namespace"])
        try:
            return self._call("POST", path, query=[("fieldManager", FIELD_MANAGER)], body=manifest), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        return existing or {}, False

    def delete(self, api_version: str, kind: str, namespace: str, name: str, *, uid: str = "") -> bool:
        """True when something was deleted; absent objects are fine. With `uid`, only that object."""
        body: dict = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._call("DELETE", resource_path(api_version, kind, namespace, name), body=body)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def annotate(self, api_version: str, kind: str, namespace: str, name: str, annotations: dict) -> dict:
        """Merge-patch annotations onto one object (no field manager: they are not kept in shape)."""
        return self._call(
            "PATCH",
            resource_path(api_version, kind, namespace, name),
            body={"metadata": {"annotations": annotations}},
            content_type="application/merge-patch+json",
        )

    def patch_status(self, namespace: str, name: str, status: dict, kind: str = "ModelService") -> dict:
        path = resource_path(f"{API_GROUP}/{API_VERSION}", kind, namespace, name) + "/status"
        return self._call(
            "PATCH",
            path,
            body={"status": status},
            content_type="application/merge-patch+json",
            query=[("fieldManager", FIELD_MANAGER)],
        )
