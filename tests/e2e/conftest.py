"""Fixtures for the e2e tier: the chart installed on the cluster in $KUBECONFIG, the artifact
store (MinIO, which enforces keys), the digits model trained and uploaded, and one restricted
namespace per test with its own store keys (hack/store-tenant.py).

`make test-e2e` builds and loads the images first (hack/mserve-images.sh), then runs this tier.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_kube import CHART, RELEASE, ROOT, SYSTEM_NS, Cluster, dump_namespace, show_evidence, wait_until
from e2e_models import DigitsModel
from e2e_tenants import (
    ARTIFACT_BUCKET,
    MODEL_BUCKET,
    ROOT_SECRET,
    S3_ENDPOINT,
    STORE_SECRET,
    create_namespace,
    delete_namespace,
    namespace_name,
    s3_client_with,
    secret_data,
)

from tests.support.ports import free_port


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


@dataclass
class Forward:
    """A `kubectl port-forward` to a Service, for calls from the host on any cluster."""

    process: subprocess.Popen
    url: str


def port_forward(cluster: Cluster, namespace: str, service: str, port: int) -> Forward:
    local = free_port()
    process = subprocess.Popen(
        [cluster.binary, "-n", namespace, "port-forward", f"svc/{service}", f"{local}:{port}"],
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
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "KUBECTL": cluster.binary}
    deploy = subprocess.run(
        ["bash", str(ROOT / "hack" / "s3-store" / "deploy.sh")],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    if deploy.returncode != 0:
        pytest.fail(f"hack/s3-store/deploy.sh failed:\n{deploy.stdout}\n{deploy.stderr}")
    forward = port_forward(cluster, SYSTEM_NS, "mserve-s3", 9000)
    yield forward.url
    forward.process.terminate()


@pytest.fixture(scope="session")
def s3_client(cluster: Cluster, s3_store: str):
    """The store's admin (root keys): makes the buckets and uploads the models users name."""
    root = secret_data(cluster, SYSTEM_NS, ROOT_SECRET)
    client = s3_client_with(s3_store, root["MINIO_ROOT_USER"], root["MINIO_ROOT_PASSWORD"])
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in {MODEL_BUCKET, ARTIFACT_BUCKET} - existing:
        client.create_bucket(Bucket=bucket)
    return client


def helm_install(cluster: Cluster, *extra: str) -> None:
    cluster.helm(
        "upgrade", "--install", RELEASE, str(CHART), "-n", SYSTEM_NS, "--create-namespace", "--wait",
        # adopt same-named objects that tests/integration leaves (its ServiceAccount and ClusterRole)
        "--take-ownership",
        "--timeout", "5m",
        "--set", "artifactStore.uri=s3://mserve-artifacts/",
        "--set", f"artifactStore.s3.endpoint={S3_ENDPOINT}",
        "--set", f"artifactStore.s3.credentialsSecret={STORE_SECRET}",
        # status.usage soon after traffic, and a price sheet so that it carries a cost (test_13)
        "--set", "usage.intervalSeconds=5",
        "--set-json", 'usage.prices={"cpuHour": 0.04, "memoryGiBHour": 0.005, "gpuHour": 2.5}',
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
