"""Fixtures for the e2e tier: the chart installed on the cluster in $KUBECONFIG, an S3 store,
the digits model trained and uploaded, and one restricted namespace per test.

`make test-e2e` builds and loads the images first (hack/mserve-images.sh), then runs this tier.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_kube import CHART, RELEASE, ROOT, SYSTEM_NS, Cluster, dump_namespace, wait_until
from e2e_models import DigitsModel

from tests.support.ports import free_port

S3_SECRET = "s3-creds"
S3_KEYS = {"AWS_ACCESS_KEY_ID": "mserve", "AWS_SECRET_ACCESS_KEY": "mserve-secret"}
S3_ENDPOINT = f"http://mserve-s3.{SYSTEM_NS}.svc:9000"
MODEL_BUCKET = "models"


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
    """The in-cluster S3 store (moto); yields an endpoint URL the host can reach."""
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    cluster.kubectl("apply", "-f", str(ROOT / "hack" / "s3-store" / "s3-store.yaml"))
    cluster.kubectl(
        "-n", SYSTEM_NS, "rollout", "status", "deployment/mserve-s3", "--timeout=180s", timeout=200
    )
    forward = port_forward(cluster, SYSTEM_NS, "mserve-s3", 9000)
    yield forward.url
    forward.process.terminate()


@pytest.fixture(scope="session")
def s3_client(s3_store: str):
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=s3_store,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in {MODEL_BUCKET, "mserve-artifacts"} - existing:
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
        "--set", f"artifactStore.s3.credentialsSecret={S3_SECRET}",
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


def show_evidence(request: pytest.FixtureRequest, text: str) -> None:
    """Print past pytest's capture (a module fixture's teardown output would be lost) and keep a copy."""
    folder = ROOT / "out" / "e2e-evidence"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{uuid.uuid4().hex[:8]}.txt").write_text(text)
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\n===== evidence ({folder}) =====\n{text}")


def create_namespace(cluster: Cluster, name: str) -> str:
    """A namespace that enforces the restricted Pod Security Standard, with the S3 credentials."""
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
    literals = [f"--from-literal={key}={value}" for key, value in S3_KEYS.items()]
    cluster.kubectl("-n", name, "create", "secret", "generic", S3_SECRET, *literals)
    return name


def delete_namespace(cluster: Cluster, name: str) -> None:
    cluster.kubectl("delete", "msvc", "--all", "-n", name, "--wait=false", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def namespace_name(node_name: str) -> str:
    test = node_name.split("[")[0].removeprefix("test_").removesuffix(".py")[:30].replace("_", "-").strip("-")
    return f"e2e-{test}-{uuid.uuid4().hex[:4]}"


@pytest.fixture
def namespace(mserve: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh restricted namespace for one test; on failure its evidence is printed."""
    name = create_namespace(mserve, namespace_name(request.node.name))
    yield name
    if _failed(request):
        show_evidence(request, dump_namespace(mserve, name))
    delete_namespace(mserve, name)


@pytest.fixture(scope="module")
def module_namespace(mserve: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """One restricted namespace shared by a module's tests (one ModelService, several checks)."""
    failures_before = request.session.testsfailed
    name = create_namespace(mserve, namespace_name(Path(request.node.name).name))
    yield name
    if request.session.testsfailed > failures_before:
        show_evidence(request, dump_namespace(mserve, name))
    delete_namespace(mserve, name)
