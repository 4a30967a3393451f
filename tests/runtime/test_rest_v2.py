"""The V2 REST protocol against a real `mserve serve` process, answers checked against onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import orjson
import pytest

from tests.support.models import DigitsModel
from tests.support.serving import Server


@pytest.fixture(scope="module")
def reference(digits: DigitsModel) -> ort.InferenceSession:
    return ort.InferenceSession(str(digits.path), providers=["CPUExecutionProvider"])


def _infer_body(x: np.ndarray, **extra: object) -> dict:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}],
        **extra,
    }


def test_health_routes(digits_server: Server) -> None:
    with digits_server.client() as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert http.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
        assert http.get("/v2/models/digits/versions/1/ready").status_code == 200


def test_server_metadata_names_the_binary_extension(digits_server: Server) -> None:
    with digits_server.client() as http:
        meta = http.get("/v2").json()
    assert meta["name"] == "mserve"
    assert "binary_tensor_data" in meta["extensions"]


@pytest.mark.parametrize("path", ["/v2/models/digits", "/v2/models/digits/versions/1"])
def test_model_metadata_has_dynamic_dims_as_minus_one(digits_server: Server, path: str) -> None:
    with digits_server.client() as http:
        meta = http.get(path).json()
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 64]}]
    assert meta["outputs"] == [
        {"name": "logits", "datatype": "FP32", "shape": [-1, 10]},
        {"name": "label", "datatype": "INT64", "shape": [-1]},
    ]


def test_unknown_version_is_404(digits_server: Server) -> None:
    with digits_server.client() as http:
        r = http.get("/v2/models/digits/versions/7")
    assert r.status_code == 404
    assert "no version '7'" in r.json()["error"]


@pytest.mark.parametrize("path", ["/v2/models/digits/infer", "/v2/models/digits/versions/1/infer"])
def test_json_infer_matches_onnxruntime(
    digits_server: Server, digits: DigitsModel, reference: ort.InferenceSession, path: str
) -> None:
    x = digits.x_test[:5]
    with digits_server.client() as http:
        r = http.post(path, json=_infer_body(x, id="req-42"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "req-42"
    assert doc["model_name"] == "digits"
    assert doc["model_version"] == "1"
    logits, label = reference.run(None, {"x": x})
    out = {o["name"]: o for o in doc["outputs"]}
    assert out["logits"]["shape"] == [5, 10]
    np.testing.assert_allclose(np.array(out["logits"]["data"]).reshape(5, 10), logits, rtol=1e-5, atol=1e-5)
    assert out["label"]["data"] == label.tolist()
    assert (label == digits.y_test[:5]).mean() >= 0.6


def test_nested_json_data_is_accepted(digits_server: Server, digits: DigitsModel) -> None:
    x = digits.x_test[:2]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 64], "data": x.tolist()}]}
    with digits_server.client() as http:
        assert http.post("/v2/models/digits/infer", json=body).status_code == 200


def test_requested_outputs_subset(digits_server: Server, digits: DigitsModel) -> None:
    body = _infer_body(digits.x_test[:3], outputs=[{"name": "label"}])
    with digits_server.client() as http:
        doc = http.post("/v2/models/digits/infer", json=body).json()
    assert [o["name"] for o in doc["outputs"]] == ["label"]


def test_request_parameters_are_accepted_and_id_absent_when_not_sent(
    digits_server: Server, digits: DigitsModel
) -> None:
    body = _infer_body(digits.x_test[:1], parameters={"priority": 3, "tag": "x"})
    with digits_server.client() as http:
        doc = http.post("/v2/models/digits/infer", json=body).json()
    assert "id" not in doc


def _split(body: bytes, header_length: int) -> tuple[dict, bytes]:
    return orjson.loads(body[:header_length]), body[header_length:]


def test_binary_input_and_per_output_binary_data(
    digits_server: Server, digits: DigitsModel, reference: ort.InferenceSession
) -> None:
    x = np.ascontiguousarray(digits.x_test[:4])
    header = orjson.dumps(
        {
            "id": "bin",
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [4, 64],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}, {"name": "label"}],
        }
    )
    with digits_server.client() as http:
        r = http.post(
            "/v2/models/digits/infer",
            content=header + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
        )
    assert r.status_code == 200, r.text
    doc, rest = _split(r.content, int(r.headers["inference-header-content-length"]))
    logits_out, label_out = doc["outputs"]
    assert logits_out["parameters"]["binary_data_size"] == 4 * 10 * 4
    assert "data" not in logits_out
    assert label_out["data"] == reference.run(["label"], {"x": x})[0].tolist()
    np.testing.assert_allclose(
        np.frombuffer(rest, "<f4").reshape(4, 10),
        reference.run(["logits"], {"x": x})[0],
        rtol=1e-5,
        atol=1e-5,
    )


def test_binary_data_output_parameter_makes_every_output_binary(
    digits_server: Server, digits: DigitsModel
) -> None:
    body = _infer_body(digits.x_test[:2], parameters={"binary_data_output": True})
    with digits_server.client() as http:
        r = http.post("/v2/models/digits/infer", json=body)
    doc, rest = _split(r.content, int(r.headers["inference-header-content-length"]))
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [2 * 10 * 4, 2 * 8]
    assert len(rest) == sum(sizes)


def test_v1_predict(digits_server: Server, digits: DigitsModel, reference: ort.InferenceSession) -> None:
    x = digits.x_test[:3]
    with digits_server.client() as http:
        r = http.post("/v1/models/digits:predict", json={"instances": x.tolist()})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    logits, label = reference.run(None, {"x": x})
    assert [p["label"] for p in predictions] == label.tolist()
    np.testing.assert_allclose(np.array([p["logits"] for p in predictions]), logits, rtol=1e-5, atol=1e-5)


def test_gzip_request_body(digits_server: Server, digits: DigitsModel) -> None:
    import gzip

    body = gzip.compress(orjson.dumps(_infer_body(digits.x_test[:1])))
    with digits_server.client() as http:
        r = http.post("/v2/models/digits/infer", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
