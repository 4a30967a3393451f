"""The store's keys as the e2e tests hand them out: one restricted namespace per test (or per
tenant), each with its own key pairs made by hack/store-tenant.py against the in-cluster MinIO."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from typing import Any

from e2e_kube import ROOT, SYSTEM_NS, Cluster

# Each namespace gets two key pairs the store tells apart: the sources' (read-only on models/, as
# e2e_models.modelservice names them) and its own store keys (read/write under its prefix only).
S3_SECRET = "s3-creds"
STORE_SECRET = "mserve-store"
ROOT_SECRET = "mserve-s3-root"
S3_ENDPOINT = f"http://mserve-s3.{SYSTEM_NS}.svc:9000"
MODEL_BUCKET = "models"
ARTIFACT_BUCKET = "mserve-artifacts"


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    secret = cluster.get("-n", namespace, "secret", name)
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


def s3_client_with(endpoint: str, access_key: str, secret_key: str) -> Any:  # a boto3 S3 client
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}),
    )


def store_tenant(cluster: Cluster, endpoint: str, namespace: str, *args: str) -> subprocess.CompletedProcess:
    """hack/store-tenant.py as an admin runs it; the caller checks the outcome."""
    return subprocess.run(
        [sys.executable, str(ROOT / "hack" / "store-tenant.py"), namespace, "--endpoint", endpoint, *args],
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def give_store_keys(cluster: Cluster, endpoint: str, namespace: str) -> None:
    """The namespace's own store keys (Secret mserve-store) and read-only keys for models/ (s3-creds)."""
    for args in ((), ("--secret", S3_SECRET, "--read-only", "--read", f"s3://{MODEL_BUCKET}/")):
        result = store_tenant(cluster, endpoint, namespace, *args)
        if result.returncode != 0:
            raise AssertionError(f"store-tenant.py {namespace} {' '.join(args)}: {result.stderr}")


def take_store_keys(cluster: Cluster, endpoint: str, namespace: str) -> None:
    for secret in (STORE_SECRET, S3_SECRET):
        store_tenant(cluster, endpoint, namespace, "--secret", secret, "--delete")


def create_namespace(cluster: Cluster, name: str, store: str) -> str:
    """A namespace that enforces the restricted Pod Security Standard, with its own store keys."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
        }
    )
    give_store_keys(cluster, store, name)
    return name


def delete_namespace(cluster: Cluster, name: str, store: str) -> None:
    cluster.kubectl("delete", "msvc", "--all", "-n", name, "--wait=false", check=False)
    take_store_keys(cluster, store, name)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def namespace_name(node_name: str) -> str:
    test = node_name.split("[")[0].removeprefix("test_").removesuffix(".py")[:30].replace("_", "-").strip("-")
    return f"e2e-{test}-{uuid.uuid4().hex[:4]}"
