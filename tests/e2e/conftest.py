"""Fixtures for the e2e tier: the chart installed on the cluster in $KUBECONFIG, the artifact
store (MinIO, which enforces keys), the digits model trained and uploaded, and one restricted
namespace per test with its own store keys (hack/store-tenant.py).

`make test-e2e` builds and loads the images first (hack/images.sh), then runs this tier.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_kube import CHART, ROOT, Cluster, dump_namespace, wait_until

SYSTEM_NS = "mserve-system"
RELEASE = "mserve"
# Each namespace gets two key pairs the store tells apart: the sources' (read-only on models/, as
# e2e_models.modelservice names them) and its own store keys (read/write under its prefix only).
S3_SECRET = "s3-creds"
STORE_SECRET = "mserve-store"
ROOT_SECRET = "mserve-s3-root"
S3_ENDPOINT = f"http://mserve-s3.{SYSTEM_NS}.svc:9000"
MODEL_BUCKET = "models"
ARTIFACT_BUCKET = "mserve-artifacts"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Keep each phase's report on the item, so fixtures can dump evidence after a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(request.node, f"report_{when}", None) and getattr(request.node, f"report_{when}").failed
        for when in ("setup", "call")
    )


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    kubeconfig = os.environ.get("KUBECONFIG", "")
    if not kubeconfig:
        pytest.fail("the e2e tier needs a cluster: set KUBECONFIG (make test-e2e does)")
    cluster = Cluster(kubeconfig)
    cluster.kubectl("get", "--raw=/readyz", timeout=15)
    return cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Forward:
    """A `kubectl port-forward` to a Service, for calls from the host on any cluster."""

    process: subprocess.Popen
    url: str


def port_forward(cluster: Cluster, namespace: str, service: str, port: int) -> Forward:
    local = free_port()
    process = subprocess.Popen(
        [cluster.kubectl_binary, "-n", namespace, "port-forward", f"svc/{service}", f"{local}:{port}"],
        env={**os.environ, "KUBECONFIG": cluster.kubeconfig},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def connected() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", local)) == 0

    wait_until(f"port-forward to {service}", connected, timeout=30, interval=0.3)
    return Forward(process, f"http://127.0.0.1:{local}")


@pytest.fixture(scope="session")
def s3_store(cluster: Cluster) -> Iterator[str]:
    """The in-cluster store (MinIO, hack/s3-store/deploy.sh); yields an endpoint URL the host can reach."""
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "KUBECTL": cluster.kubectl_binary}
    deploy = subprocess.run(
        ["bash", str(ROOT / "hack" / "s3-store" / "deploy.sh")],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    if deploy.returncode != 0:
        pytest.fail(f"hack/s3-store/deploy.sh failed:\n{deploy.stdout}\n{deploy.stderr}")
    forward = port_forward(cluster, SYSTEM_NS, "mserve-s3", 9000)
    yield forward.url
    forward.process.terminate()


def secret_data(cluster: Cluster, namespace: str, name: str) -> dict[str, str]:
    secret = cluster.get("-n", namespace, "secret", name)
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}


def s3_client_with(endpoint: str, access_key: str, secret_key: str):
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


@pytest.fixture(scope="session")
def s3_client(cluster: Cluster, s3_store: str):
    """The store's admin (root keys): makes the buckets and uploads the models users name."""
    root = secret_data(cluster, SYSTEM_NS, ROOT_SECRET)
    client = s3_client_with(s3_store, root["MINIO_ROOT_USER"], root["MINIO_ROOT_PASSWORD"])
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in {MODEL_BUCKET, ARTIFACT_BUCKET} - existing:
        client.create_bucket(Bucket=bucket)
    return client


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


def helm_install(cluster: Cluster, *extra: str) -> None:
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace", "--wait",
        # adopt same-named objects that tests/integration leaves (its ServiceAccount and ClusterRole)
        "--take-ownership",
        "--timeout", "5m",
        "--set", "artifactStore.uri=s3://mserve-artifacts/",
        "--set", f"artifactStore.s3.endpoint={S3_ENDPOINT}",
        "--set", f"artifactStore.s3.credentialsSecret={STORE_SECRET}",
        *extra,
    )  # fmt: skip


@pytest.fixture(scope="session")
def mserve(cluster: Cluster, s3_client: object) -> Cluster:
    """The chart installed (step 1 of the user's story); later tests build on it."""
    helm_install(cluster)
    cluster.kubectl(
        "-n", SYSTEM_NS, "rollout", "status", f"deployment/{RELEASE}-operator", "--timeout=180s", timeout=200
    )
    return cluster


@dataclass(frozen=True)
class DigitsModel:
    folder: Path
    samples: Path
    uris: dict[str, str]  # "pt2" / "ts" / "onnx" -> s3:// URI


@pytest.fixture(scope="session")
def digits(s3_client, tmp_path_factory: pytest.TempPathFactory) -> DigitsModel:
    """The digits model trained here (examples/digits/train.py) and uploaded to the store."""
    folder = tmp_path_factory.mktemp("digits")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "digits" / "train.py"),
            "--out",
            str(folder),
            "--epochs",
            "15",
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    uris = {}
    for suffix in ("pt2", "ts", "onnx"):
        key = f"digits/model.{suffix}"
        s3_client.upload_file(str(folder / f"model.{suffix}"), MODEL_BUCKET, key)
        uris[suffix] = f"s3://{MODEL_BUCKET}/{key}"
    return DigitsModel(folder, folder / "samples.npz", uris)


def show_evidence(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's capture (a module fixture's teardown output would be lost) and keep a copy."""
    folder = ROOT / "out" / "e2e-evidence"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uuid.uuid4().hex[:8]}.txt").write_text(text)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n===== evidence ({folder}) =====\n{text}")


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


@pytest.fixture
def namespace(mserve: Cluster, s3_store: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh restricted namespace for one test; on failure its evidence is printed."""
    name = create_namespace(mserve, namespace_name(request.node.name), s3_store)
    yield name
    if _failed(request):
        show_evidence(request, dump_namespace(mserve, name))
    delete_namespace(mserve, name, s3_store)


@pytest.fixture(scope="module")
def module_namespace(mserve: Cluster, s3_store: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """One restricted namespace shared by a module's tests (one ModelService, several checks)."""
    failures_before = request.session.testsfailed
    name = create_namespace(mserve, namespace_name(Path(request.node.name).name), s3_store)
    yield name
    if request.session.testsfailed > failures_before:
        show_evidence(request, dump_namespace(mserve, name))
    delete_namespace(mserve, name, s3_store)
