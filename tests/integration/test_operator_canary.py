"""Canary bookkeeping against a real API server: a new model under strategy Canary starts a canary
Deployment beside the stable one (which keeps serving its revision), the rollout file carries the
step's weight once the canary is ready, and `kubectl mserve rollback` mid-canary aborts it: the
canary's children go, the file says no canary, the stable Deployment never changed.

The pods here are not run (no kubelet for them); their readiness is written as a kubelet would.
Gates judged on live traffic are the e2e tier's (tests/e2e/test_14_canary.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from operator_harness import (
    Kube,
    OperatorProcess,
    deployments_path,
    modelservice,
    msvc_path,
    ns_path,
    ready_pod_status,
    set_pod_status,
)
from test_operator_reconcile import NAME
from test_operator_revisions import _serving, _status, kubectl, plugin_dir  # noqa: F401 (fixture)

from tests.support.polling import wait_until

ONNX = {"quantize": "none", "prune": 0}
ROLLOUT = {
    "strategy": "Canary",
    "steps": [{"weight": 10, "pause": "5s"}, {"weight": 50, "pause": "5s"}],
    "mirrorPercent": 30,
}


def _uri(number: int) -> str:
    return f"s3://models/digits/v{number}/model.onnx"


def _rollout_file(kube: Kube, namespace: str) -> dict | None:
    config = kube.get(ns_path(namespace, "configmaps", f"{NAME}-rollout"))
    return json.loads(config["data"]["rollout.json"]) if config else None


def _fetched(deployment: dict) -> str:
    return deployment["spec"]["template"]["spec"]["initContainers"][0]["args"][1]


def _env(deployment: dict) -> dict[str, str]:
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in server["env"]}


def _canary_pods(kube: Kube, namespace: str) -> list[dict]:
    selector = f"mserve.io/modelservice={NAME},app.kubernetes.io/component=canary"
    return [
        p
        for p in kube.list(ns_path(namespace, "pods"), labels=selector)
        if not p["metadata"].get("deletionTimestamp")
    ]


def test_canary_starts_beside_the_stable_and_a_rollback_aborts_it(
    installed: Kube,
    namespace: str,
    operator: OperatorProcess,
    plugin_dir: Path,  # noqa: F811
):
    installed.create(
        msvc_path(namespace),
        modelservice(NAME, model={"uri": _uri(1)}, optimization=ONNX, rollout=ROLLOUT),
    )
    wait_until("revision 1", lambda: _serving(installed, namespace, 1), timeout=30)
    stable = installed.get(deployments_path(namespace, NAME))
    assert _env(stable)["MSERVE_ROLLOUT_FILE"] == "/etc/mserve/rollout/rollout.json"
    volume = next(v for v in stable["spec"]["template"]["spec"]["volumes"] if v["name"] == "rollout")
    assert (volume["configMap"]["name"], volume["configMap"]["optional"]) == (f"{NAME}-rollout", True)
    first = wait_until("the rollout file", lambda: _rollout_file(installed, namespace), timeout=30)
    assert first["canary"] is None
    template_before = stable["spec"]["template"]

    # A new model: a canary beside the stable, which keeps serving revision 1.
    installed.merge_patch(msvc_path(namespace, NAME), {"spec": {"model": {"uri": _uri(2)}}})
    canary = wait_until(
        "the canary Deployment",
        lambda: installed.get(deployments_path(namespace, f"{NAME}-canary")),
        timeout=30,
    )
    assert _fetched(canary) == _uri(2)
    assert _env(canary)["MSERVE_MODEL_VERSION"] == "2"
    assert canary["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "canary"
    service = installed.get(ns_path(namespace, "services", f"{NAME}-canary"))
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "canary"
    status = wait_until("status.canary", lambda: (s := _status(installed, namespace)).get("canary") and s)
    assert status["revision"] == 1
    assert (status["canary"]["phase"], status["canary"]["weight"]) == ("Progressing", 0)
    assert status["canary"]["revision"] == 2
    assert status["canary"]["stableRevision"] == 1
    roles = {e["number"]: e["role"] for e in status["revisions"]}
    assert roles == {1: "Serving", 2: "Candidate"}
    assert installed.get(deployments_path(namespace, NAME))["spec"]["template"] == template_before

    # The canary's pods become ready: step 1's weight goes into the rollout file.
    pods = wait_until("the canary's pod", lambda: _canary_pods(installed, namespace), timeout=30)
    for pod in pods:
        set_pod_status(installed, pod, ready_pod_status())
    written = wait_until(
        "weight 10 in the rollout file",
        lambda: (f := _rollout_file(installed, namespace)) and (f["canary"] or {}).get("weight") == 10 and f,
        timeout=30,
    )
    assert written["canary"]["revision"] == 2
    assert written["canary"]["mirrorPercent"] == 30
    assert written["canary"]["url"] == f"http://{NAME}-canary.{namespace}.svc.cluster.local:8080"
    assert written["generation"] == first["generation"] + 1
    status = wait_until(
        "status.canary at weight 10",
        lambda: (s := _status(installed, namespace)).get("canary", {}).get("weight") == 10 and s,
        timeout=30,
    )
    assert status["canary"]["generation"] == written["generation"]
    table = kubectl(installed, plugin_dir, "get", "msvc", "-n", namespace)
    header, row = table.stdout.splitlines()[:2]
    assert "CANARY" in header
    assert "r2 10% Progressing" in row

    # A rollback to revision 1 mid-canary: aborted, the canary gone, no split, revision 1 serving.
    done = kubectl(installed, plugin_dir, "mserve", "rollback", NAME, "--to", "1", "-n", namespace)
    assert done.returncode == 0, done.stderr
    wait_until(
        "the canary Deployment gone",
        lambda: installed.get(deployments_path(namespace, f"{NAME}-canary")) is None,
        timeout=30,
    )
    assert installed.get(ns_path(namespace, "services", f"{NAME}-canary")) is None
    assert _rollout_file(installed, namespace)["canary"] is None
    status = wait_until(
        "status.canary Aborted",
        lambda: (s := _status(installed, namespace)).get("canary", {}).get("phase") == "Aborted" and s,
        timeout=30,
    )
    assert status["revision"] == 1
    assert "aborted" in status["canary"]["message"]
    canary_condition = next(c for c in status["conditions"] if c["type"] == "Canary")
    assert (canary_condition["status"], canary_condition["reason"]) == ("False", "CanaryAborted")
    assert installed.get(deployments_path(namespace, NAME))["spec"]["template"] == template_before
