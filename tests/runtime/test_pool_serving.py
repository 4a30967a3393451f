"""Pool mode: one `mserve serve --pool DIR` process serving many models, loaded on demand.

Each test reads like a user's steps against a real server process and real onnxruntime,
on models the test makes (each with its own weights, so a mix-up would show in the outputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.support.models import build_tiny_mlp
from tests.support.pool_serving import index, label_values, metric, serving_pool
from tests.support.serving import Server

MODELS = 24
X = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)


def _expected(path: Path) -> np.ndarray:
    return ort.InferenceSession(str(path)).run(None, {"x": X})[0]


def _infer_body(x: np.ndarray = X) -> dict:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def _outputs(response) -> np.ndarray:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.text
    out = response.json()["outputs"][0]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pool-repo")
    for i in range(MODELS):
        build_tiny_mlp(directory / f"m{i:02d}.onnx", seed=i)
    build_tiny_mlp(directory / "nested" / "model.onnx", seed=99)
    return directory


@pytest.fixture(scope="module")
def pool(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("pool-server") / "mserve.log"
    with serving_pool(repository, log, "--pool-preload", "m00,m01", grpc=True) as server:
        yield server


def test_preloaded_models_are_ready_when_the_server_is(pool: Server) -> None:
    with pool.client() as client:
        rows = index(client)
        assert rows["m00"]["state"] == rows["m01"]["state"] == "READY"
        assert rows["m02"]["state"] == "UNAVAILABLE"
        assert set(rows) == {f"m{i:02d}" for i in range(MODELS)} | {"nested"}


def test_every_model_answers_with_its_own_weights(pool: Server, repository: Path) -> None:
    names = [f"m{i:02d}" for i in range(MODELS)] + ["nested"]
    with pool.client() as client:
        for name in names:
            path = repository / (f"{name}.onnx" if name != "nested" else "nested/model.onnx")
            got = _outputs(client.post(f"/v2/models/{name}/infer", json=_infer_body()))
            np.testing.assert_allclose(got, _expected(path), rtol=1e-5, atol=1e-6)
        rows = index(client, ready=True)
        assert set(rows) == set(names), "the default budget (half the machine's memory) holds them all"
        text = pool.metrics()
    for name in names:
        assert metric(text, "mserve_model_loaded", model=name) == 1
        assert metric(text, "mserve_requests_total", model=name, protocol="rest", status="200") >= 1
        assert metric(text, "mserve_model_memory_bytes", model=name) > 0
    assert metric(text, "mserve_pool_memory_used_bytes") == sum(r["memory_bytes"] for r in rows.values())


def test_metadata_and_v1_predict_load_the_model_first(pool: Server) -> None:
    with pool.client() as client:
        client.post("/v2/repository/models/m05/unload").raise_for_status()
        meta = client.get("/v2/models/m05")
        assert meta.status_code == 200, meta.text
        assert meta.json()["inputs"][0]["name"] == "x"
        client.post("/v2/repository/models/m06/unload").raise_for_status()
        predicted = client.post("/v1/models/m06:predict", json={"instances": X.tolist()})
        assert predicted.status_code == 200, predicted.text


def test_unload_then_the_next_request_loads_again(pool: Server) -> None:
    with pool.client() as client:
        _outputs(client.post("/v2/models/m03/infer", json=_infer_body()))
        assert client.post("/v2/repository/models/m03/unload").status_code == 200
        row = index(client)["m03"]
        assert (row["state"], row["reason"], row["memory_bytes"]) == ("UNAVAILABLE", "unloaded on request", 0)
        assert client.get("/v2/models/m03/ready").json()["ready"] is False
        _outputs(client.post("/v2/models/m03/infer", json=_infer_body()))
        assert index(client)["m03"]["state"] == "READY"
        assert client.post("/v2/repository/models/m03/load").status_code == 200  # loaded already: fine


def test_grpc_serves_the_same_models(pool: Server, repository: Path) -> None:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(pool.grpc_url)
    for name in ("m07", "m08"):
        tensor = triton.InferInput("x", list(X.shape), "FP32")
        tensor.set_data_from_numpy(X)
        result = client.infer(name, [tensor])
        np.testing.assert_allclose(result.as_numpy("y"), _expected(repository / f"{name}.onnx"), rtol=1e-5)
    client.close()


def test_concurrent_requests_for_an_unloaded_model_share_one_load(pool: Server) -> None:
    with pool.client() as client:
        client.post("/v2/repository/models/m09/unload").raise_for_status()
        before = metric(pool.metrics(), "mserve_model_load_seconds_count", model="m09")

        def one(_: int) -> int:
            return client.post("/v2/models/m09/infer", json=_infer_body()).status_code

        with ThreadPoolExecutor(8) as threads:
            statuses = list(threads.map(one, range(16)))
        after = metric(pool.metrics(), "mserve_model_load_seconds_count", model="m09")
    assert statuses == [200] * 16
    assert after - before == 1


def test_model_labels_in_metrics_stay_within_the_repository(pool: Server) -> None:
    with pool.client() as client:
        for i in range(200):
            client.post(f"/v2/models/random-{i}/infer", json=_infer_body())
        text = pool.metrics()
    served = {f"m{i:02d}" for i in range(MODELS)} | {"nested"}
    assert label_values(text, "model") <= served | {"_unknown", "_pool"}


def test_grpc_repository_rpcs_are_tritons(pool: Server) -> None:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(pool.grpc_url)
    try:
        client.load_model("m10")
        states = {m.name: m.state for m in client.get_model_repository_index().models}
        assert states["m10"] == "READY"
        assert client.is_model_ready("m10")
        client.unload_model("m10")
        assert not client.is_model_ready("m10")
        metadata = client.get_model_metadata("m10")  # loads it again, as a REST metadata read does
        assert [t.name for t in metadata.inputs] == ["x"]
        assert client.is_model_ready("m10")
        client.unload_model("m10")
        ready_only = {
            m.name for m in client.get_model_repository_index(as_json=False).models if m.state == "READY"
        }
        assert "m10" not in ready_only
        for call, code in (
            (lambda: client.load_model("missing"), "StatusCode.NOT_FOUND"),
            (lambda: client.unload_model("../m10"), "StatusCode.NOT_FOUND"),
            (lambda: client.load_model("m10", config='{"backend": "python"}'), "StatusCode.INVALID_ARGUMENT"),
        ):
            with pytest.raises(InferenceServerException) as caught:
                call()
            assert caught.value.status() == code
    finally:
        client.close()


def test_tritonclient_http_repository_calls_work_unchanged(pool: Server) -> None:
    import tritonclient.http as triton_http

    client = triton_http.InferenceServerClient(pool.host)
    try:
        client.load_model("m11")
        assert client.is_model_ready("m11")
        states = {row["name"]: row["state"] for row in client.get_model_repository_index()}
        assert states["m11"] == "READY"
        client.unload_model("m11")
        assert not client.is_model_ready("m11")
    finally:
        client.close()
