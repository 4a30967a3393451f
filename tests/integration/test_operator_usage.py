"""status.usage against a real API server: written by the operator's usage loop beside the
reconcile's own status (which must not remove it), saying why figures are absent; the cost
gauge stays away while there is no cost."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import Kube, OperatorProcess, modelservice, msvc_path

from tests.support.polling import wait_until

NAME = "metered"


@pytest.fixture
def metering_operator(namespace: str, operator_kubeconfig: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    env = {
        "MSERVE_OPERATOR_USAGE_INTERVAL_SECONDS": "1",
        "MSERVE_OPERATOR_PRICE_CPU_HOUR": "0.04",
        "MSERVE_OPERATOR_PRICE_MEMORY_GIB_HOUR": "0.005",
    }
    process = OperatorProcess(operator_kubeconfig, namespace, tmp_path / "operator.log", env=env).start()
    yield process
    process.stop()


def test_usage_says_no_pod_runs_and_survives_the_reconciles_status(
    installed: Kube, namespace: str, metering_operator: OperatorProcess
) -> None:
    installed.create(msvc_path(namespace), modelservice(NAME))

    def usage_and_phase() -> dict | None:
        status = (installed.get(msvc_path(namespace, NAME)) or {}).get("status") or {}
        return status if status.get("usage") and status.get("phase") else None

    status = wait_until("status.usage beside the phase", usage_and_phase, timeout=60)
    usage = status["usage"]
    assert usage["message"] == "no runtime pod is running"
    assert usage["costMessage"] == "no runtime pod is running"
    assert usage["pods"] == 0
    assert usage["targetWindowSeconds"] == 300
    assert "requestsPerSecond" not in usage
    assert "costPer1kInferences" not in usage
    # A spec edit makes the reconcile write its status again (observedGeneration); the usage loop
    # does not rewrite unchanged figures, so usage is still there only if the reconcile kept it.
    installed.merge_patch(
        msvc_path(namespace, NAME), {"spec": {"access": {"allowedNamespaces": [namespace]}}}
    )

    def observed() -> dict | None:
        obj = installed.get(msvc_path(namespace, NAME))
        return obj if obj["status"].get("observedGeneration") == obj["metadata"]["generation"] > 1 else None

    assert wait_until("the reconcile's status for the edit", observed, timeout=30)["status"]["usage"] == usage

    with urllib.request.urlopen(f"http://127.0.0.1:{metering_operator.metrics_port}/metrics", timeout=5) as r:
        page = r.read().decode()
    assert f'mserve_operator_usage_cost_per_1k_inferences{{modelservice="{NAME}"' not in page
