"""Last step: `helm uninstall` leaves no operator objects behind. The CRDs stay on purpose
(Helm never deletes CRDs from a chart's crds/ folder: deleting one deletes every
ModelService); docs/operations.md says how to remove them."""

from __future__ import annotations

from conftest import RELEASE, SYSTEM_NS
from e2e_kube import Cluster, wait_until


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


def test_helm_uninstall_leaves_no_operator_objects(mserve: Cluster) -> None:
    assert operator_objects(mserve), "nothing installed to uninstall"
    mserve.helm("uninstall", RELEASE, "-n", SYSTEM_NS, "--wait", "--timeout", "2m")
    wait_until("no operator objects", lambda: not operator_objects(mserve), timeout=120)
    assert mserve.get_or_none("crd", "modelservices.mserve.io") is not None, "CRDs are kept on uninstall"
