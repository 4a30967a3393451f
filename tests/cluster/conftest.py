"""Fixtures for the cluster tier: a real Kubernetes cluster named by a kubeconfig.

The kubeconfig is, in order: $MSERVE_KUBECONFIG, $KUBECONFIG, or the one `hack/cluster.sh up`
writes (${MSERVE_CACHE:-~/.cache/mserve}/cluster/admin.kubeconfig). Without a reachable API
server every test here skips, so the other tiers run anywhere, unless MSERVE_REQUIRE_CLUSTER=1
(as `make test` sets): then each fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest
from cluster_helpers import TEST_IMAGE, wait_until

from tests.support.cluster_access import HACK, cache_dir, find_binary, find_kubeconfig, no_cluster
from tests.support.kubectl import Kubectl, dump_namespace


@pytest.fixture(scope="session")
def kubectl() -> Kubectl:
    binary = find_binary("kubectl")
    kubeconfig = find_kubeconfig()
    if not binary:
        no_cluster("no kubectl (run hack/cluster.sh up, or put kubectl on PATH)")
    if not kubeconfig:
        no_cluster("no cluster kubeconfig (run hack/cluster.sh up, or set KUBECONFIG)")
    k = Kubectl(kubeconfig, binary)
    try:
        proc = k.run("get", "--raw=/readyz", check=False, timeout=10)
    except subprocess.TimeoutExpired:
        no_cluster(f"API server of {kubeconfig} did not answer in 10s")
    if proc.returncode != 0:
        no_cluster(f"API server of {kubeconfig} not reachable: {proc.stderr.strip()[:200]}")
    return k


@pytest.fixture(scope="session")
def ready_node(kubectl: Kubectl) -> str:
    """The name of a Ready node; skips the pod tests on a control-plane-only cluster."""
    nodes = kubectl.json("get", "nodes")["items"]
    if not nodes:
        no_cluster("cluster has no node (hack/cluster.sh up --control-plane-only)")
    for node in nodes:
        for cond in node["status"].get("conditions", []):
            if cond["type"] == "Ready" and cond["status"] == "True":
                return node["metadata"]["name"]
    return nodes[0]["metadata"]["name"]  # test_node_ready reports the details


@pytest.fixture(scope="session")
def test_image(kubectl: Kubectl, ready_node: str) -> str:
    """Build the tests' image (a static Go binary FROM scratch) and load it into the node."""
    with tempfile.TemporaryDirectory() as ctx:
        src = Path(__file__).parent / "testimage"
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
        env.setdefault("GOCACHE", str(cache_dir() / "go-build"))
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", f"{ctx}/clustertest", "."],
            cwd=src,
            env=env,
            check=True,
            timeout=300,
        )
        shutil.copy(src / "Dockerfile", f"{ctx}/Dockerfile")
        subprocess.run(
            [str(HACK / "docker-images.sh"), "build", TEST_IMAGE, f"{ctx}/Dockerfile", ctx],
            check=True,
            timeout=300,
        )
    subprocess.run([str(HACK / "docker-images.sh"), "load", TEST_IMAGE], check=True, timeout=300)
    return TEST_IMAGE


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def namespace(request, kubectl: Kubectl):
    """A fresh namespace per test, dumped on failure and deleted afterwards."""
    name = f"cluster-test-{uuid.uuid4().hex[:8]}"
    kubectl.run("create", "namespace", name)
    # pods may only start once the namespace's default ServiceAccount exists
    wait_until(
        "default ServiceAccount",
        lambda: kubectl.run("-n", name, "get", "sa", "default", check=False).returncode == 0,
        timeout=60,
    )
    yield name
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n===== diagnostics for namespace {name} =====\n{dump_namespace(kubectl, name)}")
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)
