"""Canary rollouts on the real cluster, under steady load, every answer naming its revision (the V2
model_version), with zero failed requests throughout:
  (a) a copy of the served model goes 10% -> 50% -> 100% and is promoted; (d) during the 50% step
      the canary's share of 2,000 answers is within 3 points of 50%;
  (b) the same MLP with its output columns permuted (another label order) passes its own offline
      validation (an int8 Job) but answers differently: the agreement gate catches it on mirrored
      live traffic and rolls it back, naming the gate and its figures;
  (c) `kubectl mserve rollback` during a canary aborts it; the stable keeps serving.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from e2e_kube import Cluster, wait_until
from e2e_models import DigitsModel, modelservice, service_url
from e2e_tenants import MODEL_BUCKET
from load import BoundedLoad, LoadResult
from onnx import numpy_helper
from test_12_rollback import kubectl_mserve, plugin_path  # noqa: F401 (fixture)

NAME = "digits-canary"
SERVING = {
    "replicas": 1,
    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
}
# The weight-accuracy figure of issue 13: within 3 points over 2,000 answers.
ACCURACY_SAMPLE = 2000
ACCURACY_POINTS = 3.0
STEPS = [{"weight": 10, "pause": "15s"}, {"weight": 50, "pause": "90s"}, {"weight": 100, "pause": "5s"}]


def canary_spec(uri: str, quantize: str = "none", steps: list[dict] | None = None) -> dict:
    body = modelservice(NAME, uri, quantize=quantize, serving=SERVING)
    body["spec"]["rollout"] = {"strategy": "Canary", "steps": steps or STEPS, "mirrorPercent": 20}
    return body


def permuted_copy(source: Path, out: Path) -> None:
    """The same network with its output columns permuted: another label order. Its offline
    validation (against itself) passes; its answers differ from the original's on every row."""
    model = onnx.load(str(source))
    last = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert last.op_type == "Gemm", last.op_type
    order = np.roll(np.arange(10), 1)
    for initializer in model.graph.initializer:
        if initializer.name in last.input[1:]:
            values = numpy_helper.to_array(initializer)
            initializer.CopyFrom(numpy_helper.from_array(values[order], initializer.name))
    onnx.save(model, str(out))


def canary_status(cluster: Cluster, namespace: str) -> dict:
    return cluster.get("-n", namespace, "msvc", NAME).get("status", {}).get("canary") or {}


def serving(cluster: Cluster, namespace: str, number: int) -> dict | None:
    obj = cluster.get("-n", namespace, "msvc", NAME)
    status = obj.get("status", {})
    current = status.get("observedGeneration") == obj["metadata"]["generation"]
    return obj if current and status.get("phase") == "Ready" and status.get("revision") == number else None


def upload_copy(s3_client, source: Path, key: str) -> str:
    s3_client.upload_file(str(source), MODEL_BUCKET, key)
    return f"s3://{MODEL_BUCKET}/{key}"


def no_failures(result: LoadResult) -> None:
    assert result.failed == 0, f"{result.failed} of {result.sent} requests failed: {result.errors}"


def show(cluster: Cluster, namespace: str, title: str) -> None:
    table = cluster.kubectl("-n", namespace, "get", "msvc", NAME)
    canary = cluster.kubectl("-n", namespace, "get", "msvc", NAME, "-o", "jsonpath={.status.canary}")
    command = f"kubectl get msvc {NAME} -o jsonpath='{{.status.canary}}'"
    print(f"\n--- {title}\n$ kubectl get msvc\n{table}\n$ {command}")
    print(json.dumps(json.loads(canary), indent=2) if canary else "(none)")


@pytest.fixture(scope="module")
def stable(mserve: Cluster, module_namespace: str, digits: DigitsModel) -> dict:
    """Revision 1: the digits ONNX model served as it is, strategy Canary from the start."""
    mserve.apply(canary_spec(digits.uris["onnx"]), module_namespace)
    return wait_until("revision 1 Ready", lambda: serving(mserve, module_namespace, 1), 600, 2)


@pytest.fixture(scope="module")
def load_x(digits: DigitsModel) -> np.ndarray:
    return np.load(digits.samples)["x"][:4]


def test_full_canary_under_load_is_promoted_with_an_accurate_split(
    mserve: Cluster, module_namespace: str, stable: dict, digits: DigitsModel, s3_client, load_x
) -> None:
    uri = upload_copy(s3_client, Path(digits.folder) / "model.onnx", "digits/canary-v2/model.onnx")
    url = service_url(mserve, module_namespace, NAME)
    step_two_at = step_three_at = 0.0
    with BoundedLoad(url, NAME, load_x, threads=4, max_seconds=600, max_requests=400_000) as load:
        wait_until("answers from revision 1", lambda: len(load.result.answers) > 50, 60, 0.5)
        mserve.apply(canary_spec(uri), module_namespace)

        def at_step_two() -> bool:
            status = canary_status(mserve, module_namespace)
            if status.get("phase") not in (None, "Progressing"):
                raise AssertionError(f"the canary ended before step 2: {status}")
            return status.get("step") == 2 and bool(status.get("stepStartedAt"))

        wait_until("step 2 (50%) applied on the stable pods", at_step_two, 300, 0.3)
        step_two_at = time.monotonic()
        show(mserve, module_namespace, "during the canary, step 2")
        wait_until(
            "step 3 (100%) written",
            lambda: (
                canary_status(mserve, module_namespace).get("step") == 3
                or canary_status(mserve, module_namespace).get("phase") != "Progressing"
            ),
            300,
            0.3,
        )
        step_three_at = time.monotonic()
        wait_until(
            "revision 2 promoted",
            lambda: canary_status(mserve, module_namespace).get("phase") == "Succeeded",
            300,
            1,
        )
        until = time.monotonic() + 3
        wait_until("3 s more of load", lambda: time.monotonic() > until, 10, 0.5)
        result = load.stop()
    no_failures(result)
    show(mserve, module_namespace, "after the promotion")

    # Answers sent at weight 50: from a second after every stable pod applied it (the runtime re-reads
    # the file every second) until step 3 was written.
    during = [v for sent, v in sorted(result.answers) if step_two_at + 1 < sent < step_three_at]
    during = during[:ACCURACY_SAMPLE]
    share = 100.0 * sum(v == "2" for v in during) / max(1, len(during))
    print(
        f"\nstep 2: canary share {share:.1f}% of {len(during)} answers (weight 50%); {result.sent} requests"
    )
    assert len(during) == ACCURACY_SAMPLE, f"only {len(during)} answers during the 50% step"
    assert abs(share - 50.0) <= ACCURACY_POINTS

    obj = wait_until("revision 2 serving", lambda: serving(mserve, module_namespace, 2), 120, 1)
    status = obj["status"]
    assert status["canary"]["phase"] == "Succeeded"
    assert mserve.kubectl("-n", module_namespace, "get", "deployment", "-o", "name").split() == [
        f"deployment.apps/{NAME}"
    ]
    print(f"weight applied on the stable pods after {status['canary'].get('appliedAfterSeconds')} s")


def test_a_model_answering_differently_is_caught_by_shadow_comparison_and_rolled_back(
    mserve: Cluster, module_namespace: str, stable: dict, digits: DigitsModel, s3_client, load_x, tmp_path
) -> None:
    permuted = tmp_path / "model.onnx"
    permuted_copy(Path(digits.folder) / "model.onnx", permuted)
    uri = upload_copy(s3_client, permuted, "digits/canary-permuted/model.onnx")
    before = mserve.get("-n", module_namespace, "msvc", NAME)["status"]["revision"]
    url = service_url(mserve, module_namespace, NAME)
    with BoundedLoad(url, NAME, load_x, threads=4, max_seconds=900, max_requests=400_000) as load:
        mserve.apply(canary_spec(uri, quantize="dynamic-int8"), module_namespace)
        wait_until(
            "the canary rolled back",
            lambda: canary_status(mserve, module_namespace).get("phase") == "RolledBack",
            900,
            1,
        )
        show(mserve, module_namespace, "after the automatic rollback")
        until = time.monotonic() + 3
        wait_until("3 s more of load", lambda: time.monotonic() > until, 10, 0.5)
        result = load.stop()
    no_failures(result)
    obj = mserve.get("-n", module_namespace, "msvc", NAME)
    status = obj["status"]
    assert status["revision"] == before
    assert status["optimization"]["verdict"] == "passed", "it passed its own offline validation"
    message = status["canary"]["message"]
    assert "agreement" in message
    assert "comparisons" in message
    assert status["canary"]["gates"]["agreement"] < 0.95
    condition = next(c for c in status["conditions"] if c["type"] == "Canary")
    assert (condition["status"], condition["reason"]) == ("False", "CanaryRolledBack")
    entry = next(e for e in status["revisions"] if e["number"] == status["canary"]["revision"])
    assert (entry["role"], entry["outcome"]) == ("Retired", "CanaryFailed")
    events = mserve.get("-n", module_namespace, "events", "--field-selector", f"involvedObject.name={NAME}")
    warnings = [e["message"] for e in events["items"] if e.get("reason") == "CanaryRolledBack"]
    assert warnings
    assert "agreement" in warnings[-1]
    print("\n" + warnings[-1])
    assert not mserve.get("-n", module_namespace, "deployments", "-l", "app.kubernetes.io/component=canary")[
        "items"
    ]
    # Not tried again while the spec stays as it is: 10 s of reconciles (every 3 s during a canary).
    until = time.monotonic() + 10
    wait_until("10 s", lambda: time.monotonic() > until, 20, 1)
    assert canary_status(mserve, module_namespace)["phase"] == "RolledBack"


def test_a_manual_rollback_during_a_canary_aborts_it(
    mserve: Cluster,
    module_namespace: str,
    stable: dict,
    digits: DigitsModel,
    s3_client,
    load_x,
    plugin_path: str,  # noqa: F811
) -> None:
    serving_now = mserve.get("-n", module_namespace, "msvc", NAME)["status"]["revision"]
    uri = upload_copy(s3_client, Path(digits.folder) / "model.onnx", "digits/canary-v4/model.onnx")
    url = service_url(mserve, module_namespace, NAME)
    long_steps = [{"weight": 20, "pause": "10m"}]
    with BoundedLoad(url, NAME, load_x, threads=4, max_seconds=600, max_requests=400_000) as load:
        mserve.apply(canary_spec(uri, steps=long_steps), module_namespace)
        # status.canary still holds the previous test's rolled-back canary until this one starts.
        wait_until(
            "the canary answering 20%",
            lambda: (
                canary_status(mserve, module_namespace).get("phase") == "Progressing"
                and canary_status(mserve, module_namespace).get("stepStartedAt")
            ),
            300,
            0.5,
        )
        canary_revision = canary_status(mserve, module_namespace)["revision"]
        wait_until(
            "answers from the canary",
            lambda: any(v == str(canary_revision) for _, v in load.result.answers[-200:]),
            60,
            0.5,
        )
        started = time.monotonic()
        done = kubectl_mserve(
            mserve, plugin_path, "rollback", NAME, "--to", str(serving_now), "-n", module_namespace
        )
        assert done.returncode == 0, done.stderr
        wait_until(
            "the canary aborted",
            lambda: canary_status(mserve, module_namespace).get("phase") == "Aborted",
            60,
            0.5,
        )
        show(mserve, module_namespace, "after a manual rollback during the canary")
        until = time.monotonic() + 5
        wait_until("5 s more of load", lambda: time.monotonic() > until, 10, 0.5)
        result = load.stop()
    no_failures(result)
    late = [sent - started for sent, v in result.answers if v == str(canary_revision) and sent > started]
    print(f"\ncanary answers after the rollback command: last at +{max(late, default=0):.1f} s")
    assert max(late, default=0) <= 10
    tail = [v for sent, v in result.answers if sent > started + max(late, default=0) + 0.5]
    assert tail
    assert set(tail) == {str(serving_now)}
    assert not mserve.get("-n", module_namespace, "deployments", "-l", "app.kubernetes.io/component=canary")[
        "items"
    ]
