"""A ModelPool with `isolation: Process` on the real cluster: ONE pool pod (no other replica to
cover for it) serving three members, each in a worker process of its own. A real SIGSEGV sent
from the node to one member's worker while both members are under load: the other member loses
no request, the pod does not restart, the crashed member answers again (its next request loads
it in a new worker), and the pod's metrics count the crash. A careless `isolation` is refused by
the API server naming the field. And a runaway request (one member's run allocating past the
pod's memory limit) makes the kernel's OOM killer end that member's worker, not the server."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.error
import uuid

import numpy as np
import pytest
from e2e_kube import ROOT, Cluster, wait_until
from e2e_models import condition, infer_http, infer_response, service_url
from e2e_tenants import MODEL_BUCKET
from load import BoundedLoad
from test_15_pools import container_processes, member

from tests.support.models import build_memory_hog_model, build_tiny_mlp

POOL = "isolated"
MEMBERS = ("calm", "victim", "third", "hog")
HOG_ROW_MIB = 128  # a request of 8 rows holds 1 GiB for a moment: past the pod's 768Mi
POOL_PODS = f"mserve.io/pool={POOL},app.kubernetes.io/component=pool"
RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}}
X = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)


def pool_spec(**overrides: object) -> dict:
    spec = {"replicas": 1, "isolation": "Process", "memoryBudget": "512Mi", "resources": RESOURCES}
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelPool",
        "metadata": {"name": POOL},
        "spec": spec | overrides,
    }


def the_pool_pod(cluster: Cluster, namespace: str) -> dict:
    pods = [
        p
        for p in cluster.get("-n", namespace, "pods", "-l", POOL_PODS)["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
    return pods[0]


def worker_on_node(cluster: Cluster, namespace: str, pod: dict, model: str) -> int:
    """The node's pid of `model`'s current worker: the server logs its pid in the container's pid
    namespace; the node's /proc maps it (NSpid) within the container's cgroup."""
    logs = cluster.kubectl("-n", namespace, "logs", pod["metadata"]["name"], "-c", "server")
    found = re.findall(rf"model '{model}' runs in worker process (\d+)", logs)
    assert found, f"no worker logged for {model}"
    inner = found[-1]
    for entry in container_processes(pod):
        try:
            nspid = next(x for x in (entry / "status").read_text().splitlines() if x.startswith("NSpid:"))
        except (OSError, StopIteration):
            continue
        if nspid.split()[-1] == inner:
            return int(entry.name)
    raise AssertionError(f"worker {inner} of {model} not found on this node")


def pod_metric(pod: dict, name: str, model: str) -> float:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8082/metrics", timeout=10) as response:
        text = response.read().decode()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == name and s.labels.get("model") == model
    )


@pytest.fixture(scope="module")
def pool(mserve: Cluster, module_namespace: str, s3_client, tmp_path_factory: pytest.TempPathFactory) -> str:
    crd = str(ROOT / "crds" / "mserve.io_modelpools.yaml")  # `helm upgrade` never updates CRDs
    mserve.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=mserve-install", "-f", crd)
    mserve.apply(pool_spec(), module_namespace)
    folder, prefix = tmp_path_factory.mktemp("isolated"), f"isolated-{uuid.uuid4().hex[:6]}"
    for seed, name in enumerate(MEMBERS):
        if name == "hog":
            build_memory_hog_model(folder / f"{name}.onnx", HOG_ROW_MIB)
        else:
            build_tiny_mlp(folder / f"{name}.onnx", sizes=(16, 256, 4), seed=seed)
        s3_client.upload_file(str(folder / f"{name}.onnx"), MODEL_BUCKET, f"{prefix}/{name}.onnx")
        mserve.apply(
            member(name, f"s3://{MODEL_BUCKET}/{prefix}/{name}.onnx", {"pool": POOL}), module_namespace
        )

    def ready() -> bool:
        items = mserve.get("-n", module_namespace, "msvc")["items"]
        done = {o["metadata"]["name"] for o in items if condition(o, "Ready").get("status") == "True"}
        return set(MEMBERS) <= done

    wait_until("the members Ready in the isolated pool", ready, timeout=600, interval=3)
    return module_namespace


def test_a_careless_isolation_is_refused_naming_the_field(mserve: Cluster, pool: str) -> None:
    for value in ("process", "Thread", ""):
        refused = mserve.try_kubectl(
            "apply", "-n", pool, "-f", "-", stdin=json.dumps(pool_spec(isolation=value))
        )
        assert refused.returncode != 0, f"isolation {value!r} was accepted"
        assert "spec.isolation" in refused.stderr, refused.stderr
    spec = mserve.get("-n", pool, "modelpool", POOL)["spec"]
    assert spec["isolation"] == "Process", "the refused applies changed nothing"


def test_a_crash_of_one_members_worker_leaves_the_others_serving_in_the_same_pod(
    mserve: Cluster, pool: str
) -> None:
    for name in MEMBERS:
        infer_http(service_url(mserve, pool, name), name, X)  # each loaded in its worker
    pod = the_pool_pod(mserve, pool)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    victim = worker_on_node(mserve, pool, pod, "victim")
    calm_url, victim_url = service_url(mserve, pool, "calm"), service_url(mserve, pool, "victim")
    with (
        BoundedLoad(calm_url, "calm", X, 2, 120, 100_000) as calm,
        BoundedLoad(victim_url, "victim", X, 2, 120, 100_000) as hit,
    ):
        wait_until("answers before the crash", lambda: len(calm.result.answers) > 50, 60, 0.2)
        wait_until("victim answers before the crash", lambda: len(hit.result.answers) > 50, 60, 0.2)
        os.kill(victim, signal.SIGSEGV)
        crashed_at = time.monotonic()
        wait_until(
            "victim answers again after the crash",
            lambda: sum(1 for sent, _ in hit.result.answers if sent > crashed_at + 0.5) > 50,
            60,
            0.2,
        )
        calm_result, hit_result = calm.stop(), hit.stop()
    print(
        f"\nSIGSEGV of victim's worker under load, one pool pod: calm {calm_result.sent} requests, "
        f"{calm_result.failed} failed; victim {hit_result.sent} requests, {hit_result.failed} failed "
        f"({hit_result.errors[:2]})"
    )
    assert calm_result.failed == 0, f"the other member lost requests: {calm_result.errors}"
    assert hit_result.failed <= 4, "only the victim's requests in flight at the crash fail"
    pod = the_pool_pod(mserve, pool)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == restarts, "the pod did not restart"
    assert worker_on_node(mserve, pool, pod, "victim") != victim, "a new worker serves the victim"
    assert pod_metric(pod, "mserve_model_crashes_total", "victim") == 1
    assert pod_metric(pod, "mserve_model_crashes_total", "calm") == 0
    logs = mserve.kubectl("-n", pool, "logs", pod["metadata"]["name"], "-c", "server")
    assert "model 'victim' crashed: its worker process" in logs
    assert "was killed by SIGSEGV" in logs
    infer_http(service_url(mserve, pool, "third"), "third", X)


def test_a_runaway_request_is_oom_killed_in_its_members_worker_and_the_others_keep_serving(
    mserve: Cluster, pool: str
) -> None:
    hog_url = service_url(mserve, pool, "hog")
    assert infer_http(hog_url, "hog", X[:1]).shape == (1, 1)  # loaded: 128 MiB for one row
    pod = the_pool_pod(mserve, pool)
    restarts = pod["status"]["containerStatuses"][0]["restartCount"]
    with BoundedLoad(service_url(mserve, pool, "calm"), "calm", X, 2, 120, 100_000) as calm:
        wait_until("answers before the runaway request", lambda: len(calm.result.answers) > 50, 60, 0.2)
        runaway = np.ones((8, 16), np.float32)
        with pytest.raises(urllib.error.HTTPError) as refused:
            infer_response(hog_url, "hog", runaway, timeout=60)
        body = refused.value.read().decode()
        after = len(calm.result.answers)
        wait_until("calm answers after it", lambda: len(calm.result.answers) > after + 50, 60, 0.2)
        calm_result = calm.stop()
    print(f"\nrunaway request to hog (8 x {HOG_ROW_MIB} MiB in a 768Mi pod): {refused.value.code} {body}")
    print(f"calm under load meanwhile: {calm_result.sent} requests, {calm_result.failed} failed")
    assert refused.value.code == 503
    assert "model 'hog' crashed" in body
    assert "SIGKILL" in body, "the kernel's OOM killer ended the worker"
    assert calm_result.failed == 0, calm_result.errors
    pod = the_pool_pod(mserve, pool)
    assert pod["status"]["containerStatuses"][0]["restartCount"] == restarts, (
        "the server was not the one killed"
    )
    assert infer_http(hog_url, "hog", X[:1]).shape == (1, 1), "hog serves a sane request again"
    assert pod_metric(pod, "mserve_model_crashes_total", "hog") == 1
