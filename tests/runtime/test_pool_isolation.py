"""Pool mode's blast radius and its careless or hostile inputs: a broken model, bad requests
to one model, hostile names in URLs and in the directory, bad repository bodies and bad
settings. Each gets a 4xx (or a start-up error) naming what was wrong; the others serve on."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.support.models import build_tiny_mlp, build_warmup_failing_model
from tests.support.pool_serving import index, metric, serving_pool
from tests.support.ports import free_port
from tests.support.serving import MSERVE, Server

GOOD = {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}
BAD_BODIES = [
    {"inputs": [{"name": "x", "shape": [1, 15], "datatype": "FP32", "data": [0.5] * 15}]},
    {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "INT64", "data": [1] * 16}]},
    {"inputs": [{"name": "nope", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]},
    {"inputs": [{"name": "x", "shape": [1, 16], "datatype": "FP32", "data": ["a"] * 16}]},
    {"inputs": "x"},
    {},
]


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pool-isolation")
    for i in range(3):
        build_tiny_mlp(directory / f"m{i}.onnx", seed=i)
    (directory / "corrupt.onnx").write_bytes(b"this is not an ONNX model" * 10)
    build_warmup_failing_model(directory / "warmupfails.onnx")
    # Entries no model name may come from: skipped, never served.
    for hostile in ("bad name.onnx", "-dash.onnx", "a..b.onnx", "x" * 70 + ".onnx", ".hidden.onnx"):
        build_tiny_mlp(directory / hostile)
    (directory / "notes.txt").write_text("not a model")
    (directory / "emptydir").mkdir()
    return directory


@pytest.fixture(scope="module")
def pool(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("pool-isolation-server") / "mserve.log"
    with serving_pool(repository, log) as server:
        yield server


def test_only_valid_names_are_listed(pool: Server) -> None:
    with pool.client() as client:
        assert set(index(client)) == {"m0", "m1", "m2", "corrupt", "warmupfails"}


@pytest.mark.parametrize("name", ["corrupt", "warmupfails"])
def test_a_model_that_fails_to_load_is_409_and_the_others_serve(pool: Server, name: str) -> None:
    with pool.client() as client:
        for _ in range(2):
            response = client.post(f"/v2/models/{name}/infer", json=GOOD)
            assert response.status_code == 409, response.text
            assert f"model '{name}' failed to load" in response.json()["error"]
        row = index(client)[name]
        assert row["state"] == "UNAVAILABLE"
        assert "failed to load" in row["reason"]
        text = pool.metrics()
        assert metric(text, "mserve_model_load_failures_total", model=name) == 1, (
            "the same file is tried once"
        )
        assert client.post("/v2/models/m0/infer", json=GOOD).status_code == 200
        assert client.get("/v2/health/ready").status_code == 200


def test_a_broken_model_over_grpc_is_failed_precondition(repository: Path, tmp_path: Path) -> None:
    import numpy as np
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    with serving_pool(repository, tmp_path / "mserve.log", grpc=True) as server:
        client = triton.InferenceServerClient(server.grpc_url)
        tensor = triton.InferInput("x", [1, 16], "FP32")
        tensor.set_data_from_numpy(np.zeros((1, 16), np.float32))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("corrupt", [tensor])
        assert caught.value.status() == "StatusCode.FAILED_PRECONDITION"
        assert "model 'corrupt' failed to load" in caught.value.message()
        assert client.infer("m0", [tensor]).as_numpy("y").shape == (1, 4)
        client.close()


def test_a_fixed_file_loads_again(repository: Path, tmp_path: Path) -> None:
    directory = tmp_path / "repo"
    directory.mkdir()
    broken = directory / "later.onnx"
    broken.write_bytes(b"garbage")
    with serving_pool(directory, tmp_path / "mserve.log") as server, server.client() as client:
        assert client.post("/v2/models/later/infer", json=GOOD).status_code == 409
        build_tiny_mlp(directory / "staged.onnx")
        os.replace(directory / "staged.onnx", broken)  # a new file, as a copy tool would leave it
        response = client.post("/v2/models/later/infer", json=GOOD)
        assert response.status_code == 200, response.text


def test_bad_requests_to_one_model_leave_the_others_serving(pool: Server) -> None:
    with pool.client() as client:

        def bad(i: int) -> int:
            return client.post("/v2/models/m1/infer", json=BAD_BODIES[i % len(BAD_BODIES)]).status_code

        def good(i: int) -> int:
            return client.post(f"/v2/models/m{(i % 2) * 2}/infer", json=GOOD).status_code

        with ThreadPoolExecutor(8) as threads:
            bad_statuses = threads.map(bad, range(60))
            good_statuses = threads.map(good, range(60))
            bad_list, good_list = list(bad_statuses), list(good_statuses)
        assert set(bad_list) == {400}
        assert good_list == [200] * 60
        assert client.post("/v2/models/m1/infer", json=GOOD).status_code == 200, "m1 itself still serves"
        assert client.post("/v2/models/m1/infer", content=b"{not json").status_code == 400


HOSTILE_NAMES = [
    "..",
    "...",
    "%2e%2e",
    "..%2fm0",
    "m0%00",
    "m0%2f..%2fm1",
    "x" * 10_000,
    "%ff%fe",
    "%C3%A4",
    "*",
    "m0%20",
    "M0",
    "corrupt%2e",
    "notes.txt",
    "emptydir",
    "bad%20name",
]


def _raw_request(server: Server, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
    """Sent as written: httpx would resolve `..` segments before the server saw them."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        payload = orjson.dumps(body) if body is not None else None
        connection.request(method, path, body=payload, headers={"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize("name", HOSTILE_NAMES, ids=lambda n: n[:20])
def test_hostile_model_names_get_404_never_5xx(pool: Server, name: str) -> None:
    for method, path, body in (
        ("POST", f"/v2/models/{name}/infer", GOOD),
        ("GET", f"/v2/models/{name}", None),
        ("GET", f"/v2/models/{name}/ready", None),
        ("POST", f"/v1/models/{name}:predict", {"instances": [[0.5] * 16]}),
        ("POST", f"/v2/repository/models/{name}/load", {}),
        ("POST", f"/v2/repository/models/{name}/unload", {}),
    ):
        status, content = _raw_request(pool, method, path, body)
        assert status == 404, (method, path[:80], status, content[:300])
        assert len(content) < 1000
    with pool.client() as client:
        assert client.post("/v2/models/m0/infer", json=GOOD).status_code == 200
    assert pool.alive()


def test_unknown_model_load_and_unload_are_404_naming_it(pool: Server) -> None:
    with pool.client() as client:
        for action in ("load", "unload"):
            response = client.post(f"/v2/repository/models/missing/{action}")
            assert response.status_code == 404
            assert "'missing'" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v2/repository/index", b'{"ready": "maybe"}', "ready"),
        ("/v2/repository/index", b'{"readdy": true}', "readdy"),
        ("/v2/repository/index", b"[1, 2]", "body"),
        ("/v2/repository/index", b"{oops", "malformed JSON"),
        ("/v2/repository/models/m0/load", b'{"parameters": 5}', "parameters"),
        ("/v2/repository/models/m0/load", b'{"parameters": {"config": "{}"}}', "config"),
        ("/v2/repository/models/m0/unload", b'{"force": true}', "force"),
    ],
)
def test_bad_repository_bodies_are_400_naming_the_field(
    pool: Server, path: str, body: bytes, named: str
) -> None:
    with pool.client() as client:
        response = client.post(path, content=body)
        assert response.status_code == 400, response.text
        assert named in response.json()["error"]


def _start_fails(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    cmd = [str(MSERVE), "serve", *args, "--port", str(free_port()), "--grpc-port", "0", "--host", "127.0.0.1"]
    run = subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode != 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def test_bad_pool_settings_stop_start_up_with_the_reason(repository: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    assert str(missing) in _start_fails(tmp_path, "--pool", str(missing))
    assert "not both" in _start_fails(tmp_path, str(repository / "m0.onnx"), "--pool", str(repository))
    assert "ghost" in _start_fails(tmp_path, "--pool", str(repository), "--pool-preload", "m0,ghost")
    out = _start_fails(tmp_path, "--pool", str(repository), env={"MSERVE_POOL_MEMORY_BYTES": "-5"})
    assert "memory_bytes" in out
    out = _start_fails(tmp_path, "--pool", str(repository), env={"MSERVE_POOL_LOAD_WAIT_S": "0"})
    assert "load_wait_s" in out


def test_a_model_removed_from_the_directory_is_unloaded_and_404(tmp_path: Path) -> None:
    directory = tmp_path / "repo"
    for name in ("keep", "gone"):
        build_tiny_mlp(directory / f"{name}.onnx")
    with serving_pool(directory, tmp_path / "mserve.log") as server, server.client() as client:
        for name in ("keep", "gone"):
            assert client.post(f"/v2/models/{name}/infer", json=GOOD).status_code == 200
        (directory / "gone.onnx").unlink()
        assert set(index(client)) == {"keep"}
        assert client.post("/v2/models/gone/infer", json=GOOD).status_code == 404
        text = server.metrics()
        assert metric(text, "mserve_model_loaded", model="gone") == 0
        assert metric(text, "mserve_model_memory_bytes", model="gone") == 0
        assert metric(text, "mserve_pool_memory_used_bytes") == index(client)["keep"]["memory_bytes"]
        assert client.post("/v2/models/keep/infer", json=GOOD).status_code == 200
        assert server.stop() == 0, "SIGTERM with models loaded: a clean exit"
        assert "stopped" in server.logs()


def test_new_and_replaced_files_reach_metrics_and_answers_without_a_request(tmp_path: Path) -> None:
    """A pool pod's sync sidecar writes files while the server runs: a new one is listed in
    /metrics within a rescan or two (the operator's hand-over reads that), and a loaded model
    whose file is replaced (renamed over, as `mserve fetch` does) answers from the new file."""
    directory = tmp_path / "repo"
    build_tiny_mlp(directory / "first.onnx", seed=1)
    with serving_pool(directory, tmp_path / "mserve.log") as server, server.client() as client:
        before = client.post("/v2/models/first/infer", json=GOOD).json()["outputs"][0]["data"]
        build_tiny_mlp(tmp_path / "staged.onnx", seed=2)
        os.replace(tmp_path / "staged.onnx", directory / "first.onnx")
        build_tiny_mlp(directory / "second.onnx", seed=3)
        deadline = time.monotonic() + 10
        text = server.metrics()
        while metric(text, "mserve_model_state", model="second", state="UNAVAILABLE") != 1:
            assert time.monotonic() < deadline, "a new file was not listed in /metrics"
            time.sleep(0.2)
            text = server.metrics()
        assert metric(text, "mserve_model_loaded", model="first") == 0, "the replaced file's model unloaded"
        after = client.post("/v2/models/first/infer", json=GOOD).json()["outputs"][0]["data"]
        assert after != before
        assert client.post("/v2/models/second/infer", json=GOOD).status_code == 200

        # a file that leaves is no longer listed in /metrics (the operator reads "not on this pod"),
        # and listed again when it comes back
        def states(name: str) -> list[float]:
            page = server.metrics()
            return [metric(page, "mserve_model_state", model=name, state=s) for s in ("UNAVAILABLE", "READY")]

        (directory / "second.onnx").unlink()
        deadline = time.monotonic() + 10
        while states("second") != [0, 0]:
            assert time.monotonic() < deadline, "a removed file still listed in /metrics"
            time.sleep(0.2)
        build_tiny_mlp(directory / "second.onnx", seed=3)
        while states("second") != [1, 0]:
            assert time.monotonic() < deadline, "a file back in the directory not listed again"
            time.sleep(0.2)
