"""Fixtures of the operator's integration tier: a real kube-apiserver, the operator as its own identity.

The kubeconfig is $MSERVE_KUBECONFIG, $KUBECONFIG, or the admin kubeconfig `hack/cluster.sh up`
writes. Without a reachable API server every test here skips with the reason, unless
MSERVE_REQUIRE_CLUSTER=1 (as `make test` sets): then each fails.
"""

from __future__ import annotations

import contextlib
import datetime
import random
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from operator_harness import (
    CRDS,
    GROUP_PATH,
    OPERATOR_CLUSTER_ROLE,
    OPERATOR_SA,
    Kube,
    OperatorProcess,
    dump,
    ns_path,
    service_account_kubeconfig,
)

from tests.support.cluster_access import find_kubeconfig, no_cluster
from tests.support.polling import wait_until

pytestmark = pytest.mark.cluster

_CLUSTER_PATHS = {
    "CustomResourceDefinition": "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
    "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
    "Namespace": "/api/v1/namespaces",
}


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def kube() -> Kube:
    kubeconfig = find_kubeconfig()
    if not kubeconfig:
        no_cluster("no cluster: run `hack/cluster.sh up` (or set KUBECONFIG) for the integration tests")
    try:
        kube = Kube(kubeconfig)
        kube.call("GET", "/version")
    except Exception as exc:
        no_cluster(f"no reachable kube-apiserver in {kubeconfig}: {str(exc)[:200]}")
    return kube


def _apply_file(kube: Kube, path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    for doc in docs:
        if doc["kind"] == "ClusterRole":
            doc["metadata"]["name"] = OPERATOR_CLUSTER_ROLE
        kube.apply(f"{_CLUSTER_PATHS[doc['kind']]}/{doc['metadata']['name']}", doc, manager="mserve-install")
    return docs


@pytest.fixture(scope="session")
def installed(kube: Kube) -> Kube:
    """CRDs (ModelService, kopf peering) and the operator's ClusterRole, bound to its ServiceAccount."""
    for path in sorted(CRDS.glob("*.yaml")):
        for doc in _apply_file(kube, path):
            if doc["kind"] == "CustomResourceDefinition":
                name = doc["metadata"]["name"]
                wait_until(f"CRD {name} Established", lambda n=name: _established(kube, n), timeout=30)
    namespace, account = OPERATOR_SA
    kube.apply(
        f"/api/v1/namespaces/{namespace}",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    kube.apply(
        ns_path(namespace, "serviceaccounts", account),
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": account, "namespace": namespace}},
    )
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "mserve-operator-integration"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": OPERATOR_CLUSTER_ROLE,
        },
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    binding_path = f"{_CLUSTER_PATHS['ClusterRoleBinding']}/mserve-operator-integration"
    existing = kube.get(binding_path)
    if existing and existing["roleRef"] != binding["roleRef"]:
        kube.delete(binding_path)  # roleRef is immutable: an older binding must go first
    kube.apply(binding_path, binding)
    return kube


def _established(kube: Kube, name: str) -> bool:
    crd = kube.get(f"{_CLUSTER_PATHS['CustomResourceDefinition']}/{name}") or {}
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in (crd.get("status") or {}).get("conditions") or []
    )


CLUSTER_PEERING = "/apis/kopf.dev/v1/clusterkopfpeerings/mserve"
PAUSER = "mserve-integration-tests"


def _announce(kube: Kube, lifetime: int) -> None:
    now = datetime.datetime.now(datetime.UTC).isoformat()
    entry = None if lifetime == 0 else {"priority": 2**31, "lifetime": lifetime, "lastseen": now}
    kube.merge_patch(CLUSTER_PEERING, {"status": {PAUSER: entry}})


@pytest.fixture(scope="session", autouse=True)
def cluster_operators_paused(installed: Kube) -> Iterator[None]:
    """A cluster-wide mserve operator (a Helm install) would reconcile the tests' namespaces too
    and fight the operator under test. The tests pause it the way kopf pauses any peer: an
    entry of the highest priority in the ClusterKopfPeering, kept alive while they run."""
    created = installed.get(CLUSTER_PEERING) is None
    if created:
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "mserve"}}
        installed.create("/apis/kopf.dev/v1/clusterkopfpeerings", body)
    _announce(installed, lifetime=60)
    stop = threading.Event()

    def keep_alive() -> None:
        while not stop.wait(20):
            with contextlib.suppress(Exception):
                _announce(installed, lifetime=60)

    thread = threading.Thread(target=keep_alive, name="peering-keepalive", daemon=True)
    thread.start()
    yield
    stop.set()
    thread.join()
    with contextlib.suppress(ApiException):
        if created:
            installed.delete(CLUSTER_PEERING)
        else:
            _announce(installed, lifetime=0)


@pytest.fixture(scope="session")
def operator_kubeconfig(installed: Kube, tmp_path_factory) -> str:
    """Credentials of the operator's ServiceAccount: the tests' operator has exactly the ClusterRole."""
    return str(service_account_kubeconfig(installed, tmp_path_factory.mktemp("operator") / "kubeconfig"))


@pytest.fixture
def namespace(installed: Kube, request) -> Iterator[str]:
    """A fresh namespace under the restricted Pod Security level, with the operator's peering object."""
    yield from _fresh_namespace(installed, request)


@pytest.fixture
def other_namespace(installed: Kube, request) -> Iterator[str]:
    """A second tenant's namespace, made like `namespace`."""
    yield from _fresh_namespace(installed, request)


def _fresh_namespace(installed: Kube, request) -> Iterator[str]:
    name = f"msvc-it-{uuid.uuid4().hex[:6]}"
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }
    installed.create(
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
    )
    installed.create(
        f"/apis/kopf.dev/v1/namespaces/{name}/kopfpeerings",
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": "mserve", "namespace": name},
        },
    )
    yield name
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        operator = request.node.funcargs.get("operator")
        print(f"\n===== evidence from namespace {name} =====\n{dump(installed, name, operator)}")
    # The operator under test has stopped by now: ModelServices (and ModelPools) it left (a second tenant's, a
    # test's last state) keep its finalizer and would hold the namespace in Terminating for good.
    for plural in ("modelservices", "modelpools"):
        with contextlib.suppress(ApiException):
            for obj in installed.list(f"{GROUP_PATH}/namespaces/{name}/{plural}"):
                path = f"{GROUP_PATH}/namespaces/{name}/{plural}/{obj['metadata']['name']}"
                installed.merge_patch(path, {"metadata": {"finalizers": None}})
    with contextlib.suppress(ApiException):
        installed.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def operator(namespace: str, operator_kubeconfig: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """`mserve operator run --namespace <ns>` as the operator's ServiceAccount; fails on any 403."""
    process = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator.log").start()
    yield process
    process.stop()
    forbidden = [line for line in process.log().splitlines() if "Forbidden" in line]
    assert not forbidden, "the operator's ClusterRole lacks a permission:\n" + "\n".join(forbidden[:20])


@pytest.fixture
def scraping_operator(namespace: str, operator_kubeconfig: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """The operator reading pods' metrics (pool status) every second."""
    env = {"MSERVE_OPERATOR_USAGE_INTERVAL_SECONDS": "1"}
    process = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator.log", env=env).start()
    yield process
    process.stop()


@pytest.fixture
def loopback() -> str:
    """An address of its own (127.0.0.0/8 is all loopback), so that the admin port the operator
    reads (8082, fixed like in a pod) is free whatever else runs here."""
    return f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
