"""Model pools on the real cluster: a ModelPool of 2 pods serving 23 ModelServices (22 MLPs of
about 4 MB each the test makes, and one file that is not a model), each member at its own
Service URL; a memory budget that holds only a few models, so round-robin traffic over all
members evicts and reloads; a bad request and a broken model leave the others serving; a
pool pod's server killed (SIGKILL from the node) is reported by the ModelPool; and a dedicated
ModelService moved into the pool and out again under steady load keeps its URL and loses no
request. A member added to the running pool is served without any pool pod being replaced (the
member list is a ConfigMap the pods' sync sidecars follow), and members whose artifact cannot be
fetched (a wrong digest, a missing object) leave the others served. The ModelSources are ONNX
with `quantize: none`: no optimization Job, so 23 members are Ready in the time the pool's pods
take to start."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from e2e_kube import ROOT, Cluster, wait_until
from e2e_models import condition, infer_http, infer_request, run_python_pod, service_url
from e2e_tenants import MODEL_BUCKET, S3_SECRET
from load import BoundedLoad
from test_11_access import REACH

from tests.support.models import build_tiny_mlp

POOL = "shared"
GOOD = [f"m{i:02d}" for i in range(22)]
BROKEN = "broken"
MOVER = "mover"
LATE = "late"
SIZES = (16, 1000, 1000, 4)  # 4.1 MB of FP32 weights per model
BUDGET = "24Mi"  # a few such models per pod
POD_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "768Mi"}}
DEDICATED = {"replicas": 1, "resources": POD_RESOURCES}
POOL_PODS = f"mserve.io/pool={POOL},app.kubernetes.io/component=pool"


def member(name: str, uri: str, serving: dict | None = None, sha256: str = "") -> dict:
    model = {"uri": uri, "format": "onnx", "credentialsSecret": S3_SECRET}
    if sha256:
        model["sha256"] = sha256
    return {
        "apiVersion": "mserve.io/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": {
            "model": model,
            "optimization": {"quantize": "none"},
            "serving": serving or {"pool": POOL},
        },
    }


class Models:
    """The members' model files, here and in the store, and what each answers."""

    def __init__(self, folder: Path, prefix: str) -> None:
        self.folder, self.prefix = folder, prefix
        self.x = np.random.default_rng(7).standard_normal((2, SIZES[0])).astype(np.float32)

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.onnx"

    def uri(self, name: str) -> str:
        return f"s3://{MODEL_BUCKET}/{self.prefix}/{name}.onnx"

    def expected(self, name: str) -> np.ndarray:
        session = ort.InferenceSession(str(self.path(name)), providers=["CPUExecutionProvider"])
        return session.run(None, {"x": self.x})[0]


def pool_obj(cluster: Cluster, namespace: str) -> dict:
    return cluster.get("-n", namespace, "modelpool", POOL)


def pool_pods(cluster: Cluster, namespace: str) -> list[dict]:
    pods = cluster.get("-n", namespace, "pods", "-l", POOL_PODS)["items"]
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


def pod_metrics(pod: dict) -> str:
    """The pod's /metrics on its admin port, read from the node (NetworkPolicy does not govern it)."""
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:8082/metrics", timeout=10) as response:
        return response.read().decode()


def metric_sum(text: str, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def members_ready(cluster: Cluster, namespace: str, names: list[str]) -> bool:
    items = cluster.get("-n", namespace, "msvc")["items"]
    ready = {o["metadata"]["name"] for o in items if condition(o, "Ready").get("status") == "True"}
    return set(names) <= ready


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, s3_client) -> Models:
    models = Models(tmp_path_factory.mktemp("pool-models"), f"pools-{uuid.uuid4().hex[:6]}")
    for seed, name in enumerate([*GOOD, MOVER, LATE]):
        build_tiny_mlp(models.path(name), sizes=SIZES, seed=seed)
    models.path(BROKEN).write_bytes(b"this is not an ONNX model\n" * 100)
    for name in [*GOOD, MOVER, BROKEN, LATE]:
        s3_client.upload_file(str(models.path(name)), MODEL_BUCKET, f"{models.prefix}/{name}.onnx")
    return models


@pytest.fixture(scope="module")
def pool(mserve: Cluster, module_namespace: str, models: Models) -> dict:
    """The pool with 23 members, every pod ready; how long its pods took to start."""
    # `helm upgrade` never updates a chart's CRDs: apply this checkout's ModelPool schema.
    crd = str(ROOT / "crds" / "mserve.io_modelpools.yaml")
    mserve.kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=mserve-install", "-f", crd)
    mserve.apply(
        {
            "apiVersion": "mserve.io/v1alpha1",
            "kind": "ModelPool",
            "metadata": {"name": POOL},
            "spec": {"replicas": 2, "memoryBudget": BUDGET, "resources": POD_RESOURCES},
        },
        module_namespace,
    )
    started = time.monotonic()
    for name in [*GOOD, BROKEN]:
        mserve.apply(member(name, models.uri(name)), module_namespace)

    def ready() -> dict | None:
        obj = pool_obj(mserve, module_namespace)
        status = obj.get("status", {})
        return obj if status.get("members") == 23 and status.get("phase") == "Ready" else None

    obj = wait_until("the pool Ready with 23 members", ready, timeout=900, interval=3)
    wait_until("the 22 good members Ready", lambda: members_ready(mserve, module_namespace, GOOD), 300, 3)
    print(
        f"\npool of 23 members Ready {time.monotonic() - started:.0f} s after the ModelServices were applied"
    )
    for pod in pool_pods(mserve, module_namespace):
        print(pod_start(pod))
    return obj


def pod_start(pod: dict) -> str:
    """Where a pool pod's start-up went, from its own timestamps (1 s resolution)."""
    status = pod["status"]
    sidecars = [
        s["state"]["running"]["startedAt"]
        for s in status.get("initContainerStatuses") or []
        if "running" in s["state"]
    ]
    server = next((s for s in status.get("containerStatuses") or [] if s["name"] == "server"), {})
    server_started = (server.get("state") or {}).get("running", {}).get("startedAt", "")
    ready = next((c["lastTransitionTime"] for c in status.get("conditions", []) if c["type"] == "Ready"), "")
    created = pod["metadata"]["creationTimestamp"]
    return (
        f"pod {pod['metadata']['name']}: created {created}, {len(sidecars)} sync sidecar(s) started "
        f"{min(sidecars) if sidecars else '-'}, server started (first sync pass done) {server_started}, "
        f"Ready {ready}"
    )


def pod_identities(cluster: Cluster, namespace: str) -> dict[str, tuple[str, list[int]]]:
    """Each pool pod's name -> its UID and every container's restart count."""
    return {
        p["metadata"]["name"]: (
            p["metadata"]["uid"],
            [s.get("restartCount", 0) for s in [*p["status"].get("initContainerStatuses", []),
                                                *p["status"].get("containerStatuses", [])]],
        )
        for p in pool_pods(cluster, namespace)
    }  # fmt: skip


def test_every_member_answers_at_its_own_url_with_its_own_model(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    for name in GOOD:
        url = service_url(mserve, module_namespace, name)
        obj = mserve.get("-n", module_namespace, "msvc", name)
        assert obj["status"]["url"] == f"http://{name}.{module_namespace}.svc.cluster.local:8080"
        got = infer_http(url, name, models.x, timeout=30)
        np.testing.assert_allclose(got, models.expected(name), rtol=1e-4, atol=1e-5, err_msg=name)
    print(mserve.kubectl("-n", module_namespace, "get", "modelpool"))
    print(mserve.kubectl("-n", module_namespace, "get", "msvc"))


def test_round_robin_over_all_members_evicts_and_reloads_without_a_failed_request(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    urls = {name: service_url(mserve, module_namespace, name) for name in GOOD}
    failures: list[str] = []
    sent = [0]
    lock = threading.Lock()
    order = [name for _ in range(3) for name in GOOD]

    def client(offset: int) -> None:
        for name in order[offset::4]:
            try:
                infer_http(urls[name], name, models.x, timeout=60)
            except (OSError, urllib.error.URLError, ValueError) as error:
                with lock:
                    failures.append(f"{name}: {error!r}")
            with lock:
                sent[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    seconds = time.monotonic() - started
    assert not failures, f"{len(failures)} of {sent[0]} failed: {failures[:5]}"
    pods = pool_pods(mserve, module_namespace)
    evictions = sum(metric_sum(pod_metrics(p), "mserve_model_evictions_total") for p in pods)
    used = [metric_sum(pod_metrics(p), "mserve_pool_memory_used_bytes") for p in pods]
    assert evictions > 0, "a budget of a few models and 22 members: some were evicted"
    assert all(u <= 24 << 20 for u in used), used
    print(
        f"\n{sent[0]} requests round robin over 22 members in {seconds:.1f} s: "
        f"0 failed, {evictions:.0f} evictions"
    )

    def reported() -> dict | None:
        status = pool_obj(mserve, module_namespace)["status"]
        return status if sum(p.get("evictions", 0) for p in status.get("pods", [])) > 0 else None

    status = wait_until("evictions in the ModelPool's status", reported, timeout=60)
    assert 0 < status["loaded"] < 2 * len(GOOD)
    print(mserve.kubectl("-n", module_namespace, "get", "modelpool", "-o", "wide"))


def first_answer(url: str, name: str, x: np.ndarray, timeout: float) -> float:
    """Poll until `name` answers 200 at `url`; when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            infer_http(url, name, x, timeout=10)
            return time.monotonic()
        except (OSError, urllib.error.URLError, ValueError) as error:
            last = error
        time.sleep(0.25)
    raise AssertionError(f"{name} did not answer within {timeout:.0f}s; last: {last!r}")


def test_a_member_joins_and_leaves_the_running_pool_without_replacing_its_pods(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    """The member list is a ConfigMap the pods' sync sidecars follow: a new member is fetched
    into the running pods and served, the pods (names, UIDs, restart counts) stay the same;
    members whose artifacts cannot be fetched are named in the sidecar's log, NotInPoolYet, and
    stop nothing."""
    before = pod_identities(mserve, module_namespace)
    template = mserve.get("-n", module_namespace, "deployment", POOL)["spec"]["template"]
    applied = time.monotonic()
    mserve.apply(member(LATE, models.uri(LATE)), module_namespace)
    mserve.apply(member("baddigest", models.uri(GOOD[3]), sha256="0" * 64), module_namespace)
    ghost = f"s3://{MODEL_BUCKET}/{models.prefix}/no-such-object.onnx"
    mserve.apply(member("ghost", ghost), module_namespace)
    wait_until(
        "late's Service", lambda: mserve.get_or_none("-n", module_namespace, "service", LATE), 120, 0.5
    )
    url = service_url(mserve, module_namespace, LATE)
    answered = first_answer(url, LATE, models.x, timeout=180)
    print(f"\n{LATE}: first 200 {answered - applied:.1f} s after kubectl apply")
    # Ready once every ready pool pod has the file: until then a request may reach one without it
    wait_until("late Ready", lambda: members_ready(mserve, module_namespace, [LATE]), 120, 0.5)
    ready_after = time.monotonic() - applied
    for _ in range(20):  # both pods, whichever the Service picks
        got = infer_http(url, LATE, models.x, timeout=30)
        np.testing.assert_allclose(got, models.expected(LATE), rtol=1e-4, atol=1e-5)

    def not_in_pool(name: str) -> dict | None:
        ready = condition(mserve.get("-n", module_namespace, "msvc", name), "Ready")
        return ready if ready.get("reason") == "NotInPoolYet" else None

    for name in ("baddigest", "ghost"):
        ready = wait_until(f"{name} NotInPoolYet", lambda n=name: not_in_pool(n), 120, 2)
        assert ready["status"] == "False"
    pod = pool_pods(mserve, module_namespace)[0]
    sidecar = next(c["name"] for c in pod["spec"]["initContainers"] if c["name"].startswith("sync-"))
    log = mserve.kubectl("-n", module_namespace, "logs", pod["metadata"]["name"], "-c", sidecar)
    assert "baddigest: fetch failed" in log, log[-3000:]
    assert "sha256 mismatch" in log, log[-3000:]
    assert "ghost: fetch failed" in log, log[-3000:]
    assert f"{LATE}: fetched" in log
    infer_http(service_url(mserve, module_namespace, GOOD[4]), GOOD[4], models.x, timeout=30)
    assert pod_identities(mserve, module_namespace) == before, "a pool pod was replaced or restarted"
    assert mserve.get("-n", module_namespace, "deployment", POOL)["spec"]["template"] == template
    print(f"{LATE}: Ready {ready_after:.1f} s after kubectl apply; pool pods unchanged: {sorted(before)}")

    for name in ("baddigest", "ghost", LATE):
        mserve.kubectl("-n", module_namespace, "delete", "msvc", name, "--wait=true", "--timeout=120s")
    wait_until(
        "the pool's members without them",
        lambda: (
            not {LATE, "baddigest", "ghost"}
            & set(pool_obj(mserve, module_namespace)["status"]["memberNames"])
        ),
        120,
        2,
    )
    wait_until(
        "late's file deleted by the sidecars",
        lambda: (
            f"{LATE}: left the list, deleted"
            in mserve.kubectl("-n", module_namespace, "logs", pod["metadata"]["name"], "-c", sidecar)
        ),
        60,
        2,
    )
    assert pod_identities(mserve, module_namespace) == before, "a pool pod was replaced or restarted"
    print(mserve.kubectl("-n", module_namespace, "get", "modelpool", "-o", "wide"))


def test_a_bad_request_and_a_broken_model_leave_the_others_serving(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    victim, others = GOOD[0], GOOD[1:6]
    with BoundedLoad(
        service_url(mserve, module_namespace, others[0]), others[0], models.x, 2, 120, 100_000
    ) as load:
        bad = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
        for _ in range(20):
            status, text = post(service_url(mserve, module_namespace, victim), victim, bad)
            assert status == 400, text
            assert "x" in text
        status, text = post(service_url(mserve, module_namespace, BROKEN), BROKEN, infer_request(models.x))
        assert status == 409, text
        assert f"model '{BROKEN}' failed to load" in text
        for name in others:
            infer_http(service_url(mserve, module_namespace, name), name, models.x, timeout=30)
        result = load.stop()
    assert result.failed == 0, result.errors
    assert result.sent > 0

    def broken_reported() -> dict | None:
        obj = mserve.get("-n", module_namespace, "msvc", BROKEN)
        ready = condition(obj, "Ready")
        return obj if ready.get("reason") == "ModelLoadFailed" else None

    obj = wait_until("broken's Ready=False ModelLoadFailed", broken_reported, timeout=120)
    assert condition(obj, "Ready")["status"] == "False"
    print(f"\n{BROKEN}: {condition(obj, 'Ready')['message']}")
    states = {m["name"]: m["state"] for m in pool_obj(mserve, module_namespace)["status"]["memberStates"]}
    assert states[BROKEN] == "Failed"
    assert condition(mserve.get("-n", module_namespace, "msvc", others[0]), "Ready")["status"] == "True"


def test_pool_pods_admit_the_members_namespace_and_no_other(
    mserve: Cluster, module_namespace: str, pool: dict
) -> None:
    """The pool's NetworkPolicy, as a dedicated model's: a pod in the members' namespace reaches
    a member's URL (the pool's pods), a pod in another namespace cannot."""
    name = GOOD[2]
    url = f"http://{name}.{module_namespace}.svc:8080/v2/health/ready"
    image = pool_pods(mserve, module_namespace)[0]["spec"]["containers"][0]["image"]
    phase, log = run_python_pod(mserve, module_namespace, image, "reach", [REACH, url, "30"])
    assert phase == "Succeeded", log
    outsider = f"e2e-outsider-{uuid.uuid4().hex[:4]}"
    labels = {"pod-security.kubernetes.io/enforce": "restricted"}
    mserve.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": outsider, "labels": labels}})
    try:
        wait_until(
            "the default ServiceAccount",
            lambda: mserve.try_kubectl("-n", outsider, "get", "sa", "default").returncode == 0,
        )
        phase, log = run_python_pod(mserve, outsider, image, "reach", [REACH, url, "15"])
        assert phase == "Failed", log
        assert "unreachable" in log, log
    finally:
        mserve.kubectl("delete", "namespace", outsider, "--wait=false", check=False)


def post(url: str, model: str, body: dict) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def container_processes(pod: dict) -> Iterator[Path]:
    """/proc/PID of each process of the pod's server container on this node (its container ID
    is in their cgroup path)."""
    container = next(s for s in pod["status"]["containerStatuses"] if s["name"] == "server")
    container_id = container["containerID"].split("://", 1)[1]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if container_id in (entry / "cgroup").read_text():
                yield entry
        except OSError:
            continue


def server_pid(pod: dict) -> int:
    """The pool server's process on this node."""
    for entry in container_processes(pod):
        try:
            if b"--pool" in (entry / "cmdline").read_bytes().split(b"\0"):
                return int(entry.name)
        except OSError:
            continue
    raise AssertionError(f"no pool server of pod {pod['metadata']['name']} on this node")


def test_a_killed_pool_pod_is_reported_and_the_other_keeps_serving(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    name = GOOD[1]
    read = wait_until(
        "a metrics read of a pool pod with models loaded",
        lambda: next(
            (p for p in pool_obj(mserve, module_namespace)["status"].get("pods", []) if p.get("loaded")), None
        ),
        timeout=60,
    )
    pod_name = read["name"]
    victim = next(p for p in pool_pods(mserve, module_namespace) if p["metadata"]["name"] == pod_name)
    with BoundedLoad(service_url(mserve, module_namespace, name), name, models.x, 2, 180, 100_000) as load:
        wait_until("answers before the kill", lambda: len(load.result.answers) > 20, 60, 0.5)
        os.kill(server_pid(victim), signal.SIGKILL)
        killed_at = time.monotonic()
        wait_until(
            "the victim restarted and Ready",
            lambda: any(
                p["metadata"]["name"] == pod_name
                and p["status"]["containerStatuses"][0]["restartCount"] > 0
                and p["status"]["containerStatuses"][0]["ready"]
                for p in pool_pods(mserve, module_namespace)
            ),
            timeout=180,
        )
        result = load.stop()
    after = [sent for sent, _ in result.answers if sent > killed_at]
    print(
        f"\nSIGKILL of {pod_name}'s server under load on {name}: "
        f"{result.sent} requests, {result.failed} failed "
        f"({result.errors[:3]}), {len(after)} answered after the kill"
    )
    # What fails: requests in flight on the killed process, and those the Service still sends to
    # its address until the pod's readiness says otherwise; the other pod answers the rest.
    assert after, "the other pool pod kept serving"
    with BoundedLoad(service_url(mserve, module_namespace, name), name, models.x, 2, 60, 300) as again:
        wait_until("300 requests after the restart", lambda: again.result.sent >= 300, 90, 0.5)
        recovered = again.stop()
    assert recovered.failed == 0, f"after the restart: {recovered.errors}"
    print(f"after the restart: {recovered.sent} requests, 0 failed")

    def reported() -> dict | None:
        status = pool_obj(mserve, module_namespace)["status"]
        stable = next((c for c in status.get("conditions", []) if c["type"] == "Stable"), {})
        return stable if stable.get("status") == "False" and pod_name in stable.get("message", "") else None

    stable = wait_until("the ModelPool reports the restart", reported, timeout=120)
    assert stable["reason"] == "PodRestarted"
    assert "models loaded at the last scrape: m" in stable["message"]
    events = mserve.get("-n", module_namespace, "events", "--field-selector", "reason=PoolPodRestarted")[
        "items"
    ]
    assert any(pod_name in e["message"] and e["type"] == "Warning" for e in events)
    print(f"ModelPool condition Stable=False: {stable['message']}")
    print(mserve.kubectl("-n", module_namespace, "get", "modelpool"))


def test_moving_a_modelservice_into_the_pool_and_out_keeps_its_url_and_loses_no_request(
    mserve: Cluster, module_namespace: str, pool: dict, models: Models
) -> None:
    mserve.apply(member(MOVER, models.uri(MOVER), DEDICATED), module_namespace)
    wait_until(
        "mover Ready on its own pods", lambda: members_ready(mserve, module_namespace, [MOVER]), 300, 3
    )
    url = service_url(mserve, module_namespace, MOVER)
    address = mserve.get("-n", module_namespace, "msvc", MOVER)["status"]["url"]
    expected = models.expected(MOVER)

    def selector() -> dict:
        return mserve.get("-n", module_namespace, "service", MOVER)["spec"]["selector"]

    with BoundedLoad(url, MOVER, models.x, 2, 900, 1_000_000) as load:
        wait_until("answers from mover's own pods", lambda: len(load.result.answers) > 20, 60, 0.5)
        moved_in = time.monotonic()
        mserve.patch(
            module_namespace,
            f"msvc/{MOVER}",
            {"spec": {"serving": {"pool": POOL, "replicas": None, "resources": None}}},
        )
        wait_until(
            "mover's Service selecting the pool", lambda: selector().get("mserve.io/pool") == POOL, 600, 2
        )
        wait_until(
            "mover's own Deployment gone",
            lambda: mserve.get_or_none("-n", module_namespace, "deployment", MOVER) is None,
            120,
        )
        in_pool = time.monotonic() - moved_in
        served = len(load.result.answers)
        wait_until("answers from the pool", lambda: len(load.result.answers) > served + 20, 60, 0.5)
        moved_out = time.monotonic()
        mserve.patch(module_namespace, f"msvc/{MOVER}", {"spec": {"serving": {**DEDICATED, "pool": None}}})
        wait_until(
            "mover's Service selecting its own pods",
            lambda: selector().get("mserve.io/modelservice") == MOVER,
            600,
            2,
        )
        wait_until(
            "the pool without mover, rolled out",
            lambda: (
                MOVER not in pool_obj(mserve, module_namespace)["status"]["memberNames"]
                and pool_obj(mserve, module_namespace)["status"]["phase"] == "Ready"
            ),
            600,
            3,
        )
        out_of_pool = time.monotonic() - moved_out
        served = len(load.result.answers)
        wait_until("answers after moving out", lambda: len(load.result.answers) > served + 20, 60, 0.5)
        result = load.stop()
    print(
        f"\nmover into the pool in {in_pool:.0f} s and out in {out_of_pool:.0f} s under load: "
        f"{result.sent} requests, {result.failed} failed"
    )
    assert result.failed == 0, f"{result.failed} of {result.sent} failed: {result.errors}"
    obj = mserve.get("-n", module_namespace, "msvc", MOVER)
    assert obj["status"]["url"] == address
    np.testing.assert_allclose(infer_http(url, MOVER, models.x), expected, rtol=1e-4, atol=1e-5)
