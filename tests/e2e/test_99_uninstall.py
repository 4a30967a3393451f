"""Last step: `helm uninstall` leaves no operator objects behind. The CRDs stay on purpose
(Helm never deletes CRDs from a chart's crds/ folder: deleting one deletes every
ModelService); docs/operations.md says how to remove them."""

from __future__ import annotations

import pytest
from e2e_kube import RELEASE, SYSTEM_NS, Cluster, wait_until


def operator_objects(cluster: Cluster) -> list[str]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/part-of=mserve"
    namespaced = cluster.kubectl(
        "-n",
        SYSTEM_NS,
        "get",
        "deployments,services,serviceaccounts,pods,networkpolicies",
        "-l",
        selector,
        "-o",
        "name",
    )
    cluster_wide = cluster.kubectl("get", "clusterroles,clusterrolebindings", "-l", selector, "-o", "name")
    return (namespaced + cluster_wide).split()


def modelservices(cluster: Cluster) -> list[str]:
    items = cluster.get("msvc", "-A")["items"]
    return [f"{m['metadata']['namespace']}/{m['metadata']['name']}" for m in items]


def modelpools(cluster: Cluster) -> list[str]:
    items = cluster.get("modelpool", "-A")["items"]
    return [f"{m['metadata']['namespace']}/{m['metadata']['name']}" for m in items]


def test_helm_uninstall_leaves_no_operator_objects(mserve: Cluster) -> None:
    # As the operations guide says: ModelServices (and ModelPools) go first, while the operator
    # handles their finalizers; otherwise their namespaces hang in Terminating.
    wait_until(
        "the e2e ModelServices and ModelPools to be gone",
        lambda: not [m for m in modelservices(mserve) + modelpools(mserve) if m.startswith("e2e-")],
        timeout=300,
    )
    others = modelservices(mserve)
    if others:
        pytest.skip(f"not uninstalling: the cluster serves ModelServices the tests did not make: {others}")
    assert operator_objects(mserve), "nothing installed to uninstall"
    mserve.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "2m")
    wait_until("no operator objects", lambda: not operator_objects(mserve), timeout=120)
    assert mserve.get_or_none("crd", "modelservices.mserve.io") is not None, "CRDs are kept on uninstall"
