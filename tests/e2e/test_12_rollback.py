"""Revisions and a manual rollback on the real cluster: three revisions of the digits model, then
`kubectl mserve rollback --to 1` (N-2) under steady load. Zero failed requests; every answer
names its revision (the V2 model_version), so the client itself times when all traffic is
served by revision 1: at most 10 s from the command."""

from __future__ import annotations

import calendar
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, jobs_of, modelservice, service_url
from e2e_tenants import MODEL_BUCKET
from load import BoundedLoad

NAME = "digits-rollback"
# Issue 13's figure; a slower cluster may name its own.
ROLLBACK_BUDGET_S = float(os.environ.get("MSERVE_E2E_ROLLBACK_BUDGET_S", "10"))
SERVING = {
    "replicas": 1,
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
}


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """PATH with `kubectl-mserve` first, as `pip install mserve` installs the console script."""
    folder = tmp_path_factory.mktemp("plugin")
    shim = folder / "kubectl-mserve"
    shim.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "from mserve_cli.kubectl_plugin import main; main()" "$@"\n'
    )
    shim.chmod(0o755)
    return f"{folder}:{os.environ['PATH']}"


def kubectl_mserve(cluster: Cluster, plugin_path: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig, "PATH": plugin_path}
    return subprocess.run(
        [cluster.binary, "mserve", *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def serves(cluster: Cluster, namespace: str, number: int) -> dict | None:
    obj = cluster.get("-n", namespace, "msvc", NAME)
    status = obj.get("status", {})
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if current and status.get("phase") == "Ready" and status.get("revision") == number else None


@pytest.fixture(scope="module")
def three_revisions(mserve: Cluster, module_namespace: str, digits: DigitsModel, s3_client) -> dict:
    """1: the ONNX model quantized (an optimization Job); 2: served as it is; 3: a copy at another
    URI, served as it is. Revision 1's Job is then deleted, as its TTL would."""
    copy = "digits/v3/model.onnx"
    s3_client.upload_file(str(Path(digits.folder) / "model.onnx"), MODEL_BUCKET, copy)
    specs = [
        (digits.uris["onnx"], "dynamic-int8"),
        (digits.uris["onnx"], "none"),
        (f"s3://{MODEL_BUCKET}/{copy}", "none"),
    ]
    for number, (uri, quantize) in enumerate(specs, start=1):
        mserve.apply(modelservice(NAME, uri, quantize=quantize, serving=SERVING), module_namespace)
        obj = wait_until(
            f"revision {number} Ready", lambda n=number: serves(mserve, module_namespace, n), 900, 3
        )
    for job in jobs_of(mserve, module_namespace, NAME):
        mserve.kubectl("-n", module_namespace, "delete", "job", job["metadata"]["name"], "--wait=true")
    return obj


def test_kubectl_get_shows_the_serving_revision(
    mserve: Cluster, module_namespace: str, three_revisions: dict
):
    table = mserve.kubectl("-n", module_namespace, "get", "msvc", NAME).splitlines()
    header, row = table[0].split(), table[1].split()
    assert row[header.index("REVISION")] == "3"
    roles = [(e["number"], e["role"], e.get("outcome")) for e in three_revisions["status"]["revisions"]]
    assert roles == [(1, "Retired", "Superseded"), (2, "Retired", "Superseded"), (3, "Serving", None)]


def test_rollback_to_n_minus_2_under_load_fails_nothing_and_takes_at_most_10s(
    mserve: Cluster, module_namespace: str, three_revisions: dict, digits: DigitsModel, plugin_path: str
) -> None:
    x = np.load(digits.samples)["x"][:4]
    url = service_url(mserve, module_namespace, NAME)
    with BoundedLoad(url, NAME, x, threads=2, max_seconds=300, max_requests=100_000) as load:
        wait_until("answers from revision 3", lambda: len(load.result.answers) > 20, 60, 0.5)
        started, wall = time.monotonic(), time.time()
        done = kubectl_mserve(
            mserve, plugin_path, "rollback", NAME, "--to", "1", "-n", module_namespace, "--wait"
        )
        reported = time.monotonic() - started
        assert done.returncode == 0, done.stderr
        # Keep the load on past the operator's word, so a late answer from revision 3 would show.
        until = time.monotonic() + 3
        wait_until("3 s more of load", lambda: time.monotonic() > until, 10, 0.5)
        result = load.stop()
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.errors}"
    after = [(sent, version) for sent, version in result.answers if sent >= started]
    stale = [sent for sent, version in after if version != "1"]
    switched = (max(stale) - started) if stale else 0.0
    served_by_one = [version for sent, version in after if sent > started + switched]
    print(
        f"\nrollback 3 -> 1: all traffic on revision 1 after {switched:.1f} s; the operator reported it "
        f"Ready after {reported:.1f} s; {result.sent} requests, {len(after)} after the command"
    )
    print(pod_timeline(mserve, module_namespace, wall))
    assert served_by_one, "no answer came after the switch"
    assert set(served_by_one) == {"1"}
    assert switched <= ROLLBACK_BUDGET_S, f"revision 3 still answered {switched:.1f} s after the command"
    assert not jobs_of(mserve, module_namespace, NAME), "the rollback reused revision 1's artifact, no Job"
    obj = mserve.get("-n", module_namespace, "msvc", NAME)
    assert obj["spec"]["optimization"]["quantize"] == "dynamic-int8"
    outcomes = [(e["number"], e["role"], e.get("outcome")) for e in obj["status"]["revisions"]]
    assert outcomes == [(1, "Serving", None), (2, "Retired", "Superseded"), (3, "Retired", "RolledBack")]
    listed = kubectl_mserve(mserve, plugin_path, "revisions", NAME, "-n", module_namespace)
    print(done.stdout, mserve.kubectl("-n", module_namespace, "get", "msvc", NAME), listed.stdout, sep="\n")
    print(yaml.safe_dump({"status": {k: obj["status"][k] for k in ("phase", "revision", "revisions")}}))


def pod_timeline(cluster: Cluster, namespace: str, since: float) -> str:
    """Where the rollback's seconds went, from the new pod's own timestamps (1 s resolution)."""
    pods = cluster.get("-n", namespace, "pods", "-l", f"mserve.io/modelservice={NAME}")["items"]
    pod = max(pods, key=lambda p: p["metadata"]["creationTimestamp"])
    status = pod["status"]
    init = status["initContainerStatuses"][0]["state"].get("terminated", {})
    server = status["containerStatuses"][0]["state"].get("running", {})
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    steps = {
        "pod created": pod["metadata"]["creationTimestamp"],
        "fetch started": init.get("startedAt"),
        "fetch finished": init.get("finishedAt"),
        "server started": server.get("startedAt"),
        "pod Ready": ready.get("lastTransitionTime"),
    }

    def offset(stamp: str | None) -> str:
        if not stamp:
            return "?"
        return f"{calendar.timegm(time.strptime(stamp, '%Y-%m-%dT%H:%M:%SZ')) - since:+.0f} s"

    return "new pod, from the command: " + ", ".join(f"{k} {offset(v)}" for k, v in steps.items())
