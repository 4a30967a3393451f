"""Step 1: a platform team installs mserve with Helm; the operator becomes ready."""

from __future__ import annotations

from e2e_kube import RELEASE, SYSTEM_NS, Cluster


def test_operator_deployment_is_available(mserve: Cluster) -> None:
    deployment = mserve.get("-n", SYSTEM_NS, "deployment", f"{RELEASE}-operator")
    assert deployment["status"].get("availableReplicas", 0) >= 1


def test_crd_is_established(mserve: Cluster) -> None:
    crd = mserve.get("crd", "modelservices.mserve.io")
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established.get("Established") == "True"


def test_helm_test_checks_the_operator(mserve: Cluster) -> None:
    result = mserve.helm("test", RELEASE, "-n", SYSTEM_NS, "--timeout", "2m")
    assert "Phase:          Succeeded" in result.stdout or "Succeeded" in result.stdout, result.stdout
