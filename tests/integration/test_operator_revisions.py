"""Revisions against a real API server: numbering, the cap of ten, reuse without a Job, and
`kubectl mserve rollback` (the plugin run by the real kubectl) writing the old spec back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from operator_harness import (
    Kube,
    OperatorProcess,
    deployments_path,
    finish_job_pod,
    jobs_path,
    modelservice,
    msvc_path,
    ns_path,
    spec_digest_of,
)
from test_operator_reconcile import NAME, _summary

from tests.support.cluster_access import find_binary
from tests.support.polling import wait_until


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory) -> Path:
    """A PATH entry holding `kubectl-mserve`, as `pip install mserve` puts the console script."""
    folder = tmp_path_factory.mktemp("plugin")
    shim = folder / "kubectl-mserve"
    shim.write_text(
        f'#!/bin/sh\nexec {sys.executable} -c "from mserve_cli.kubectl_plugin import main; main()" "$@"\n'
    )
    shim.chmod(0o755)
    return folder


def kubectl(kube: Kube, plugin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    binary = find_binary("kubectl")
    if not binary:
        pytest.fail("kubectl not found: `hack/cluster.sh up` builds it")
    env = {**os.environ, "KUBECONFIG": kube.kubeconfig, "PATH": f"{plugin_dir}:{os.environ['PATH']}"}
    return subprocess.run([binary, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _status(kube: Kube, namespace: str, name: str = NAME) -> dict:
    return (kube.get(msvc_path(namespace, name)) or {}).get("status") or {}


def _serving(kube: Kube, namespace: str, number: int, name: str = NAME) -> dict | None:
    obj = kube.get(msvc_path(namespace, name)) or {}
    status = obj.get("status") or {}
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return status if current and status.get("revision") == number else None


def _served_through_a_job(kube: Kube, namespace: str, quantize: str, number: int) -> dict:
    """Ask for `quantize`; let its optimization Job pass; wait until it serves as revision `number`."""
    patch = {"spec": {"optimization": {"quantize": quantize, "tolerance": {"cosine": 0.99}}}}
    if number == 1:
        kube.create(msvc_path(namespace), modelservice(NAME, optimization=patch["spec"]["optimization"]))
    else:
        kube.merge_patch(msvc_path(namespace, NAME), patch)
    digest = _status_digest_after(kube, namespace, number)
    job = wait_until(
        f"the Job of revision {number}",
        lambda: next((j for j in kube.list(jobs_path(namespace)) if spec_digest_of(j) == digest), None),
        timeout=30,
    )
    summary = _summary(namespace, digest, quantize=quantize).to_termination_message()
    finish_job_pod(kube, namespace, job["metadata"]["name"], 0, summary)
    return wait_until(f"revision {number} served", lambda: _serving(kube, namespace, number), timeout=60)


def _status_digest_after(kube: Kube, namespace: str, number: int) -> str:
    def recorded() -> str | None:
        entries = _status(kube, namespace).get("revisions") or []
        return next((e["specDigest"] for e in entries if e["number"] == number), None)

    return wait_until(f"revision {number} recorded", recorded, timeout=30)


def _server_env(kube: Kube, namespace: str) -> dict[str, str]:
    deployment = kube.get(deployments_path(namespace, NAME))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def _fetched_uri(kube: Kube, namespace: str) -> str:
    deployment = kube.get(deployments_path(namespace, NAME))
    return deployment["spec"]["template"]["spec"]["initContainers"][0]["args"][1]


def test_rollback_to_n_minus_2_reuses_its_artifact_without_a_job(
    installed: Kube, namespace: str, other_namespace: str, operator: OperatorProcess, plugin_dir: Path
):
    for number, quantize in enumerate(("dynamic-int8", "none", "fp16"), start=1):
        status = _served_through_a_job(installed, namespace, quantize, number)
    one, two, three = status["revisions"]
    assert [e["number"] for e in (one, two, three)] == [1, 2, 3]
    assert (one["role"], one["outcome"], two["outcome"], three["role"]) == (
        "Retired",
        "Superseded",
        "Superseded",
        "Serving",
    )
    assert one["source"]["optimization"]["quantize"] == "dynamic-int8"
    assert one["optimization"]["verdict"] == "passed"
    assert one["optimization"]["quantize"] == "dynamic-int8"
    assert one["artifact"]["artifactDigest"] in one["artifact"]["uri"]
    assert len(one["artifact"]["sha256"]) == 64
    assert one["servedFrom"] <= one["servedUntil"] == two["servedFrom"]
    assert _server_env(installed, namespace)["MSERVE_MODEL_VERSION"] == "3"

    # The Jobs are gone, as their TTL would have them: content addressing by the Job's name alone
    # would run revision 1's Job again; the revision history reuses its artifact.
    for job in installed.list(jobs_path(namespace)):
        installed.delete(jobs_path(namespace, job["metadata"]["name"]))
    wait_until("the Jobs deleted", lambda: not installed.list(jobs_path(namespace)), timeout=30)

    table = kubectl(installed, plugin_dir, "get", "msvc", "-n", namespace)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert "REVISION" in header
    assert row.split()[header.split().index("REVISION")] == "3"

    done = kubectl(installed, plugin_dir, "mserve", "rollback", NAME, "--to", "1", "-n", namespace)
    assert done.returncode == 0, done.stderr
    assert f"modelservice/{NAME} rolled back to revision 1" in done.stdout

    status = wait_until("revision 1 served again", lambda: _serving(installed, namespace, 1), timeout=30)
    assert not installed.list(jobs_path(namespace)), "a rollback must reuse the artifact, not run a Job"
    one, two, three = status["revisions"]
    assert (one["role"], three["role"], three["outcome"]) == ("Serving", "Retired", "RolledBack")
    assert _fetched_uri(installed, namespace) == one["artifact"]["uri"]
    assert _server_env(installed, namespace)["MSERVE_MODEL_VERSION"] == "1"
    msvc = installed.get(msvc_path(namespace, NAME))
    assert msvc["spec"]["optimization"]["quantize"] == "dynamic-int8", "the spec is the truth"
    managers = {m["manager"] for m in msvc["metadata"]["managedFields"]}
    assert "kubectl-mserve-rollback" in managers
    events = installed.list(ns_path(namespace, "events"), fields=f"involvedObject.name={NAME}")
    assert any("serving revision 1 (rolled back from revision 3)" in e.get("message", "") for e in events)

    listed = kubectl(installed, plugin_dir, "mserve", "revisions", NAME, "-n", namespace)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:3] == ["REVISION", "ROLE", "OUTCOME"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["1", "Serving", "-"],
        ["2", "Retired", "Superseded"],
        ["3", "Retired", "RolledBack"],
    ]

    as_json = kubectl(installed, plugin_dir, "mserve", "revisions", NAME, "-n", namespace, "-o", "json")
    assert json.loads(as_json.stdout) == status["revisions"]

    # The same name in a namespace where it does not exist: named, not guessed.
    elsewhere = kubectl(installed, plugin_dir, "mserve", "rollback", NAME, "--to", "1", "-n", other_namespace)
    assert elsewhere.returncode == 1
    assert f"ModelService {other_namespace}/{NAME} not found" in elsewhere.stderr


def test_history_keeps_the_last_ten_and_refuses_what_it_lost(
    installed: Kube, namespace: str, operator: OperatorProcess, plugin_dir: Path
):
    # ONNX sources served as they are: each URI a revision, no Job to wait for.
    onnx = {"quantize": "none", "prune": 0}
    installed.create(
        msvc_path(namespace),
        modelservice(NAME, model={"uri": "s3://models/digits/v1/model.onnx"}, optimization=onnx),
    )
    wait_until("revision 1", lambda: _serving(installed, namespace, 1), timeout=30)
    for number in range(2, 13):
        patch = {"spec": {"model": {"uri": f"s3://models/digits/v{number}/model.onnx"}}}
        installed.merge_patch(msvc_path(namespace, NAME), patch)
        status = wait_until(
            f"revision {number}", lambda n=number: _serving(installed, namespace, n), timeout=30
        )
    assert [e["number"] for e in status["revisions"]] == list(range(3, 13))
    assert not installed.list(jobs_path(namespace))

    cases = {
        (
            "--to",
            "1",
        ): "revision 1 of ModelService {ns}/digits has left the history, which keeps the last 10 (3-12)",
        ("--to", "13"): "ModelService {ns}/digits has no revision 13 (its revisions: 3-12)",
        ("--to", "x"): "Invalid value for '--to': 'x' is not a valid integer",
    }
    for args, words in cases.items():
        refused = kubectl(installed, plugin_dir, "mserve", "rollback", NAME, *args, "-n", namespace)
        assert refused.returncode != 0, args
        assert words.format(ns=namespace) in refused.stderr, refused.stderr
    assert _status(installed, namespace)["revision"] == 12, "a refused rollback changes nothing"

    # Without --to: the revision served just before; the spec URI goes back with it.
    back = kubectl(installed, plugin_dir, "mserve", "rollback", NAME, "-n", namespace)
    assert back.returncode == 0, back.stderr
    wait_until("revision 11 again", lambda: _serving(installed, namespace, 11), timeout=30)
    spec = installed.get(msvc_path(namespace, NAME))["spec"]
    assert spec["model"]["uri"] == "s3://models/digits/v11/model.onnx"


def test_a_change_between_read_and_patch_fails_the_rollback_and_says_so(
    installed: Kube, namespace: str, operator: OperatorProcess, tmp_path: Path
):
    """A real interleaving: a kubectl that lets someone else edit the ModelService's spec just
    before the rollback's patch reaches the API server (status writes do not count as edits)."""
    onnx = {"quantize": "none", "prune": 0}
    installed.create(
        msvc_path(namespace),
        modelservice(NAME, model={"uri": "s3://models/race/v1/model.onnx"}, optimization=onnx),
    )
    wait_until("revision 1", lambda: _serving(installed, namespace, 1), timeout=30)
    installed.merge_patch(
        msvc_path(namespace, NAME), {"spec": {"model": {"uri": "s3://models/race/v2/model.onnx"}}}
    )
    wait_until("revision 2", lambda: _serving(installed, namespace, 2), timeout=30)

    binary = find_binary("kubectl")
    racing = tmp_path / "kubectl"
    racing.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = patch ]; then {binary} -n {namespace} patch msvc {NAME} --type merge'
        """ -p '{"spec": {"serving": {"threads": 1}}}' >/dev/null; fi\n"""
        f'exec {binary} "$@"\n'
    )
    racing.chmod(0o755)
    env = {**os.environ, "KUBECONFIG": installed.kubeconfig, "MSERVE_KUBECTL": str(racing)}
    code = "from mserve_cli.kubectl_plugin import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", code, "rollback", NAME, "--to", "1", "-n", namespace],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"ModelService {namespace}/{NAME} changed while rolling back" in done.stderr
    spec = installed.get(msvc_path(namespace, NAME))["spec"]
    assert spec["model"]["uri"] == "s3://models/race/v2/model.onnx", "nothing of the rollback was written"
