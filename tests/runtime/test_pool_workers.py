"""`MSERVE_POOL_ISOLATION=process`: each pool model in a worker process of its own, so that a
crash (a real signal to the real worker: SIGSEGV as a native crash in onnxruntime leaves it,
SIGKILL as the kernel's OOM killer sends it) ends that model's worker and nothing else: the
server and every other model keep serving, the request the crash caught gets 503 naming the
model, and the model loads again on its next request."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import build_embedding_model, build_tiny_mlp
from tests.support.pool_serving import index, metric, serving_pool, start_pool
from tests.support.serving import Server

PROCESS = {"MSERVE_POOL_ISOLATION": "process"}
BODY = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
SLOW_ROWS = 4096  # a run of several hundred ms of CPU on `slow`
SLOW_BODY = {
    "inputs": [{"name": "x", "shape": [SLOW_ROWS, 16], "datatype": "FP32", "data": [0.5] * 16 * SLOW_ROWS}]
}


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    directory = tmp_path / "repo"
    for name in ("victim", "other", "third"):
        build_tiny_mlp(directory / f"{name}.onnx")
    build_tiny_mlp(directory / "slow.onnx", sizes=(16, 2048, 2048, 4))  # SLOW_BODY: a second or so
    build_embedding_model(directory / "embed.onnx")
    return directory


@pytest.fixture
def pool(repository: Path, tmp_path: Path) -> Iterator[Server]:
    with serving_pool(repository, tmp_path / "mserve.log", env=PROCESS, grpc=True) as server:
        yield server


def worker_pid(server: Server, model: str) -> int:
    """The pid of the model's current worker, from the server's log line naming it."""
    found = re.findall(rf"model '{model}' runs in worker process (\d+)", server.logs())
    assert found, f"no worker process logged for {model}"
    return int(found[-1])


def alive(pid: int) -> bool:
    """Until the process is reaped: a zombie's other threads may still be exiting, its
    descriptors (the pipe the server watches) not yet closed."""
    return Path(f"/proc/{pid}").exists()


def cpu_ticks(pid: int) -> int:
    """The process's user + system CPU time so far, in clock ticks (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def signal_during_run(pid: int, signum: int, send: Callable[[], None]) -> None:
    """Once the worker is idle (no CPU for 0.3 s: onnxruntime's threads spin a while after a
    run), `send` the slow request, and send `signum` once the worker has spent 5 ticks of CPU
    on it: it is then inside that run (SLOW_BODY takes far longer), not before or after it."""
    deadline = time.monotonic() + 30
    while True:
        before = cpu_ticks(pid)
        time.sleep(0.3)
        if cpu_ticks(pid) == before:
            break
        assert time.monotonic() < deadline, "the worker never went idle"
    send()
    while cpu_ticks(pid) < before + 5:
        assert time.monotonic() < deadline, "the worker never started the run"
        time.sleep(0.002)
    os.kill(pid, signum)


def wait_gone(pid: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still running"
        time.sleep(0.05)


class Traffic:
    """A client sending one model requests back to back on its own thread; counts the answers."""

    def __init__(self, server: Server, model: str) -> None:
        self.server, self.model = server, model
        self.codes: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.server.client() as client:
            while not self._stop.is_set():
                self.codes.append(client.post(f"/v2/models/{self.model}/infer", json=BODY).status_code)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def test_each_model_runs_in_its_own_worker_with_its_memory_accounted(pool: Server) -> None:
    with pool.client() as client:
        for name in ("victim", "other"):
            assert client.post(f"/v2/models/{name}/infer", json=BODY).status_code == 200
        pids = {worker_pid(pool, "victim"), worker_pid(pool, "other"), pool.proc.pid}
        assert len(pids) == 3, "two workers, neither of them the server"
        rows = index(client)
        for name in ("victim", "other"):
            assert rows[name]["state"] == "READY"
            assert rows[name]["memory_bytes"] > 1_000_000, "the worker's own memory, not the 2 KiB file"
        assert Path(f"/proc/{worker_pid(pool, 'victim')}/oom_score_adj").read_text().strip() == "1000"


def test_a_segfault_during_a_run_fails_only_that_request_and_the_model_comes_back(pool: Server) -> None:
    with pool.client() as client:
        assert client.post("/v2/models/slow/infer", json=BODY).status_code == 200
        victim = worker_pid(pool, "slow")
        with Traffic(pool, "other") as others:
            answer: list[httpx.Response] = []
            caught = threading.Thread(
                target=lambda: answer.append(client.post("/v2/models/slow/infer", json=SLOW_BODY)),
                daemon=True,
            )
            signal_during_run(victim, signal.SIGSEGV, caught.start)
            caught.join(60)
            time.sleep(0.5)
        response = answer[0]
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert "model 'slow' crashed" in error
        assert "SIGSEGV" in error
        assert "loads again on its next request" in error
        assert others.codes, "the other model was asked throughout"
        assert set(others.codes) == {200}, f"the other model's answers: {sorted(set(others.codes))}"
        assert pool.alive()
        again = client.post("/v2/models/slow/infer", json=BODY)
        assert again.status_code == 200, again.text
        assert worker_pid(pool, "slow") != victim
        assert metric(pool.metrics(), "mserve_model_crashes_total", model="slow") == 1
        assert metric(pool.metrics(), "mserve_model_crashes_total", model="other") == 0
    assert "model 'slow' crashed: its worker process" in pool.logs()
    assert "Fatal Python error: Segmentation fault" in pool.logs(), "the worker's own stack, in the log"


def test_a_worker_killed_while_idle_is_reloaded_by_the_next_request(pool: Server) -> None:
    """SIGKILL is what the OOM killer sends; workers ask to be its first pick (oom_score_adj)."""
    with pool.client() as client:
        for name in ("victim", "other"):
            assert client.post(f"/v2/models/{name}/infer", json=BODY).status_code == 200
        victim = worker_pid(pool, "victim")
        os.kill(victim, signal.SIGKILL)
        wait_gone(victim)
        response = client.post("/v2/models/victim/infer", json=BODY)
        assert response.status_code == 200, response.text
        assert client.post("/v2/models/other/infer", json=BODY).status_code == 200
        assert metric(pool.metrics(), "mserve_model_crashes_total", model="victim") == 1
    assert "was killed by SIGKILL (what the kernel's OOM killer sends" in pool.logs()


def test_a_model_that_keeps_crashing_is_not_reloaded_until_its_file_changes(
    pool: Server, repository: Path
) -> None:
    """Three crashes within the window: 409 naming the model and the count, not a reload per
    request (each a fork and a load on the pool's CPU); the others serve; a new file loads."""
    with pool.client() as client:
        for crash in range(3):
            response = client.post("/v2/models/victim/infer", json=BODY)
            assert response.status_code == 200, (crash, response.text)
            victim = worker_pid(pool, "victim")
            os.kill(victim, signal.SIGKILL)
            wait_gone(victim)
        refused = client.post("/v2/models/victim/infer", json=BODY)
        assert refused.status_code == 409, refused.text
        error = refused.json()["error"]
        assert "model 'victim' crashed 3 times in" in error
        assert "SIGKILL" in error
        assert "not loaded again until its file changes" in error
        assert client.post("/v2/models/victim/infer", json=BODY).status_code == 409, "still refused"
        assert client.post("/v2/models/other/infer", json=BODY).status_code == 200
        assert index(client)["victim"]["state"] == "UNAVAILABLE"
        assert metric(pool.metrics(), "mserve_model_crashes_total", model="victim") == 3
        build_tiny_mlp(repository / "staged.onnx", seed=5)
        os.replace(repository / "staged.onnx", repository / "victim.onnx")  # a new file
        deadline = time.monotonic() + 10
        while (response := client.post("/v2/models/victim/infer", json=BODY)).status_code == 409:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.2)
        assert response.status_code == 200, response.text


def test_a_crash_over_grpc_is_unavailable_naming_the_model(pool: Server) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(pool.grpc_url)
    tensor = triton.InferInput("x", [1, 16], "FP32")
    tensor.set_data_from_numpy(np.full((1, 16), 0.5, np.float32))
    slow = triton.InferInput("x", [SLOW_ROWS, 16], "FP32")
    slow.set_data_from_numpy(np.full((SLOW_ROWS, 16), 0.5, np.float32))
    assert client.infer("slow", [tensor]).as_numpy("y").shape == (1, 4)
    victim = worker_pid(pool, "slow")
    result: list[BaseException] = []

    def call() -> None:
        try:
            client.infer("slow", [slow])
        except InferenceServerException as exc:
            result.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    signal_during_run(victim, signal.SIGKILL, thread.start)
    thread.join(60)
    assert result, "the call caught by the crash failed"
    assert result[0].status() == "StatusCode.UNAVAILABLE"
    assert "model 'slow' crashed" in result[0].message()
    assert client.infer("other", [tensor]).as_numpy("y").shape == (1, 4)
    assert client.infer("slow", [tensor]).as_numpy("y").shape == (1, 4)
    client.close()


def test_a_bad_input_in_a_worker_is_400_and_the_worker_stays(pool: Server) -> None:
    bad = {"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 99]}]}
    good = {"inputs": [{"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]}
    with pool.client() as client:
        assert client.post("/v2/models/embed/infer", json=good).status_code == 200
        worker = worker_pid(pool, "embed")
        response = client.post("/v2/models/embed/infer", json=bad)
        assert response.status_code == 400, response.text
        assert "could not run on these inputs" in response.json()["error"]
        assert "99" in response.json()["error"]
        answer = client.post("/v2/models/embed/infer", json=good)
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"][:4] == [1.0] * 4
        assert worker_pid(pool, "embed") == worker


def test_eviction_and_shutdown_end_the_workers(tmp_path: Path) -> None:
    """Models of 17 MB, so that a worker's footprint is mostly the weights (the ~10 MiB a worker
    adds varies with timing): a budget of 1.5 models never holds two."""
    repository = tmp_path / "big"
    for name in ("victim", "other"):
        build_tiny_mlp(repository / f"{name}.onnx", sizes=(16, 2048, 2048, 4))
    with serving_pool(repository, tmp_path / "probe.log", env=PROCESS) as probe, probe.client() as client:
        assert client.post("/v2/models/victim/infer", json=BODY).status_code == 200
        one_model = index(client)["victim"]["memory_bytes"]
    env = {**PROCESS, "MSERVE_POOL_MEMORY_BYTES": str(int(one_model * 1.5))}
    server = start_pool(repository, tmp_path / "mserve.log", env=env)
    try:
        with server.client() as client:
            assert client.post("/v2/models/victim/infer", json=BODY).status_code == 200
            first = worker_pid(server, "victim")
            assert client.post("/v2/models/other/infer", json=BODY).status_code == 200
            assert index(client)["victim"]["state"] == "EVICTED"
            wait_gone(first)
            last = worker_pid(server, "other")
    finally:
        assert server.stop() == 0
    wait_gone(last)


def test_workers_end_with_a_server_that_is_killed(repository: Path, tmp_path: Path) -> None:
    server = start_pool(repository, tmp_path / "mserve.log", env=PROCESS)
    try:
        with server.client() as client:
            assert client.post("/v2/models/victim/infer", json=BODY).status_code == 200
        worker = worker_pid(server, "victim")
        server.proc.kill()
        server.proc.wait(10)
        wait_gone(worker)
    finally:
        server.stop()


def test_a_careless_isolation_setting_stops_start_up_naming_it(repository: Path, tmp_path: Path) -> None:
    for value in ("thread", "PROCESS ", "1"):
        server = start_pool(
            repository, tmp_path / "mserve.log", env={"MSERVE_POOL_ISOLATION": value}, wait_ready=False
        )
        assert server.proc.wait(60) == 2, server.logs()
        assert "isolation" in server.logs(), server.logs()
        assert "Traceback" not in server.logs()
