"""Hostile and mistaken requests get a 4xx that names the problem; the server keeps serving."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.support.models import DigitsModel
from tests.support.serving import Server

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def _x(**overrides: object) -> dict:
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64, **overrides}
    return {"inputs": [tensor]}


def _binary(header: dict, payload: bytes, header_length: int | None = None) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    length = len(head) if header_length is None else header_length
    return head + payload, {"Inference-Header-Content-Length": str(length)}


BINARY_X = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "parameters": {"binary_data_size": 256}}]
}

# (case id, path, body bytes or JSON, extra headers, status, words the message must contain)
CASES = [
    (
        "wrong shape",
        "digits",
        _x(shape=[1, 63], data=[0.5] * 63),
        {},
        400,
        ["'x'", "expected shape [-1, 64]", "[1, 63]"],
    ),
    (
        "wrong rank",
        "digits",
        _x(shape=[64], data=[0.5] * 64),
        {},
        400,
        ["'x'", "expected shape [-1, 64]", "[64]"],
    ),
    (
        "wrong datatype",
        "digits",
        _x(datatype="INT64", data=[1] * 64),
        {},
        400,
        ["'x'", "expected datatype FP32", "INT64"],
    ),
    ("unknown datatype", "digits", _x(datatype="FP8"), {}, 400, ["'x'", "FP8"]),
    (
        "data does not match shape",
        "digits",
        _x(data=[0.5] * 10),
        {},
        400,
        ["'x'", "needs 64 elements", "has 10"],
    ),
    ("non-numeric data", "digits", _x(data=["a"] * 64), {}, 400, ["'x'", "FP32"]),
    ("missing input", "digits", {"inputs": []}, {}, 400, ["missing input 'x'", "FP32 [-1, 64]"]),
    (
        "unknown input",
        "digits",
        {"inputs": [{"name": "y", "datatype": "FP32", "shape": [1], "data": [1]}]},
        {},
        400,
        ["unknown input 'y'", "x (FP32 [-1, 64])"],
    ),
    (
        "unknown output",
        "digits",
        {**GOOD, "outputs": [{"name": "nope"}]},
        {},
        400,
        ["unknown output 'nope'", "logits"],
    ),
    ("unknown model", "nosuch", GOOD, {}, 404, ["'nosuch'", "not served"]),
    ("malformed JSON", "digits", b'{"inputs": [', {}, 400, ["malformed JSON"]),
    ("JSON that is not an object", "digits", b"[1, 2]", {}, 400, ["JSON object"]),
    ("no inputs list", "digits", {"id": "x"}, {}, 400, ["'inputs'"]),
    ("id not a string", "digits", {**GOOD, "id": 5}, {}, 400, ["'id'"]),
    ("negative dimension", "digits", _x(shape=[-1, 64]), {}, 400, ["'x'", "non-negative"]),
    (
        "truncated binary payload",
        "digits",
        _binary(BINARY_X, b"\0" * 100),
        {},
        400,
        ["truncated", "'x'", "binary_data_size 256", "100 bytes"],
    ),
    (
        "binary size does not match shape",
        "digits",
        _binary(
            {
                "inputs": [
                    {
                        "name": "x",
                        "datatype": "FP32",
                        "shape": [1, 64],
                        "parameters": {"binary_data_size": 100},
                    }
                ]
            },
            b"\0" * 100,
        ),
        {},
        400,
        ["'x'", "needs 256 bytes", "received 100"],
    ),
    (
        "header length beyond body",
        "digits",
        _binary(BINARY_X, b"\0" * 256, header_length=10**6),
        {},
        400,
        ["Inference-Header-Content-Length"],
    ),
    (
        "header length not a number",
        "digits",
        orjson.dumps(GOOD),
        {"Inference-Header-Content-Length": "ten"},
        400,
        ["integer"],
    ),
    ("binary size without binary part", "digits", BINARY_X, {}, 400, ["'x'", "no binary part"]),
    ("bad gzip", "digits", b"not gzip", {"Content-Encoding": "gzip"}, 400, ["decompress"]),
    ("unknown content encoding", "digits", orjson.dumps(GOOD), {"Content-Encoding": "br"}, 400, ["'br'"]),
    ("empty body", "digits", b"", {}, 400, ["malformed JSON"]),
    ("invalid UTF-8 in JSON", "digits", b'{"id": "\xff\xfe"}', {}, 400, ["malformed JSON"]),
    ("NaN literal", "digits", b'{"inputs": [{"name": "x", "data": [NaN]}]}', {}, 400, ["malformed JSON"]),
    ("deeply nested JSON", "digits", b"[" * 5000 + b"]" * 5000, {}, 400, ["malformed JSON"]),
    (
        "integer beyond 64 bits",
        "digits",
        b'{"inputs": [], "id": 1' + b"0" * 40 + b"}",
        {},
        400,
        ["'id' must be a string"],
    ),
    ("float dimension", "digits", _x(shape=[1.0, 64]), {}, 400, ["'x'", "non-negative integers"]),
    (
        "input given twice",
        "digits",
        {"inputs": [GOOD["inputs"][0], GOOD["inputs"][0]]},
        {},
        400,
        ["'x'", "more than once"],
    ),
    (
        "negative header length",
        "digits",
        orjson.dumps(GOOD),
        {"Inference-Header-Content-Length": "-5"},
        400,
        ["-5"],
    ),
    ("outputs not a list", "digits", {**GOOD, "outputs": {"name": "logits"}}, {}, 400, ["'outputs'"]),
    ("parameters not an object", "digits", {**GOOD, "parameters": [1]}, {}, 400, ["parameters"]),
    (
        "binary_data not a boolean",
        "digits",
        {**GOOD, "outputs": [{"name": "logits", "parameters": {"binary_data": "yes"}}]},
        {},
        400,
        ["binary_data"],
    ),
    (
        "BYTES data for a number tensor",
        "digits",
        _x(datatype="BYTES", data=["a"] * 64),
        {},
        400,
        ["'x'", "expected datatype FP32", "BYTES"],
    ),
]


def _send(server: Server, model: str, body: object, headers: dict[str, str]):
    if isinstance(body, tuple):
        body, extra = body
        headers = {**headers, **extra}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    with server.client() as http:
        return http.post(f"/v2/models/{model}/infer", content=content, headers=headers)


@pytest.mark.parametrize(
    ("case", "model", "body", "headers", "status", "words"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_request_gets_4xx_naming_the_problem_then_good_request_works(
    digits_server: Server, case: str, model: str, body: object, headers: dict, status: int, words: list[str]
) -> None:
    r = _send(digits_server, model, body, headers)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    for word in words:
        assert word in message, f"{case}: {word!r} not in {message!r}"
    good = _send(digits_server, "digits", GOOD, {})
    assert good.status_code == 200, good.text
    assert digits_server.alive()


def test_oversized_request_is_413(digits_server: Server) -> None:
    big = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [20000, 64], "data": [0.5] * (20000 * 64)}]}
    r = _send(digits_server, "digits", big, {})
    assert r.status_code == 413
    assert "exceeds the limit of 1000000 bytes" in r.json()["error"]
    assert _send(digits_server, "digits", GOOD, {}).status_code == 200


def test_oversized_chunked_request_is_413(digits_server: Server) -> None:
    def chunks():
        yield b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": ['
        for _ in range(200):
            yield b"0.5," * 2000
        yield b"0.5]}]}"

    with digits_server.client() as http:
        r = http.post("/v2/models/digits/infer", content=chunks())
    assert r.status_code == 413
    assert _send(digits_server, "digits", GOOD, {}).status_code == 200


def test_v1_predict_bad_instances(digits_server: Server, digits: DigitsModel) -> None:
    with digits_server.client() as http:
        r = http.post("/v1/models/digits:predict", json={"instances": [[1, 2]]})
        assert r.status_code == 400
        assert "expected shape [-1, 64]" in r.json()["error"]
        r = http.post("/v1/models/digits:predict", json={"rows": []})
        assert r.status_code == 400
        assert "instances" in r.json()["error"]
        ok = http.post("/v1/models/digits:predict", json={"instances": np.zeros((1, 64)).tolist()})
        assert ok.status_code == 200


def test_wrong_method_is_405(digits_server: Server) -> None:
    with digits_server.client() as http:
        r = http.get("/v2/models/digits/infer")
        assert r.status_code == 405
        assert "error" in r.json()
        assert http.post("/v2/models/digits/infer", json=GOOD).status_code == 200
