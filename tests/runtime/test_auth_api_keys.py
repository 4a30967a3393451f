"""MSERVE_AUTH=apiKey on a real `mserve serve`: keys from a Secret-volume-shaped directory,
REST and gRPC through unmodified tritonclient, rotation without restart, usage per key."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException

from tests.support.models import DigitsModel
from tests.support.polling import wait_until
from tests.support.secret_volume import write_secret
from tests.support.serving import Server, serving

KEY_A = "a-3f9c1d2e7b6a5f40"
KEY_B = "b-0c8e7d6f5a4b3c21"
GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 64], "data": [0.5] * 128}]}


@pytest.fixture(scope="module")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api-keys")
    write_secret(root / "team-a", {"key": KEY_A, "blank": "  \n"})
    write_secret(root / "team-b", {"ci": f"{KEY_B}\n"})
    return root


@pytest.fixture(scope="module")
def server(digits: DigitsModel, keys_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("apikey") / "mserve.log"
    args = ("--auth", "apiKey", "--api-keys-dir", str(keys_dir))
    with serving(digits.path, "digits", log, *args, grpc=True) as served:
        yield served


def _x(rows: int = 2) -> np.ndarray:
    return np.full((rows, 64), 0.5, dtype=np.float32)


def _http_infer(server: Server, headers: dict[str, str] | None) -> np.ndarray:
    client = triton_http.InferenceServerClient(server.host)
    try:
        tensor = triton_http.InferInput("x", [2, 64], "FP32")
        tensor.set_data_from_numpy(_x(), binary_data=True)
        return client.infer("digits", [tensor], headers=headers).as_numpy("logits")
    finally:
        client.close()


def _grpc_infer(server: Server, headers: dict[str, str] | None) -> np.ndarray:
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    try:
        tensor = triton_grpc.InferInput("x", [2, 64], "FP32")
        tensor.set_data_from_numpy(_x())
        return client.infer("digits", [tensor], headers=headers).as_numpy("logits")
    finally:
        client.close()


def test_rest_without_a_key_is_401_with_www_authenticate(server: Server) -> None:
    answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "no credential" in answer.json()["error"]


def test_rest_with_a_wrong_key_is_403(server: Server) -> None:
    for headers in ({"Authorization": "Bearer nope"}, {"X-API-Key": KEY_A + "x"}):
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD, headers=headers)
        assert answer.status_code == 403, headers
        assert "www-authenticate" not in answer.headers
        assert answer.json()["error"] == "invalid API key"


def test_rest_with_the_right_key_serves_both_headers(server: Server) -> None:
    for headers in ({"Authorization": f"Bearer {KEY_A}"}, {"X-API-Key": KEY_B}):
        answer = httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD, headers=headers)
        assert answer.status_code == 200, answer.text


def test_tritonclient_http_with_headers(server: Server) -> None:
    assert _http_infer(server, {"Authorization": f"Bearer {KEY_A}"}).shape == (2, 10)
    assert _http_infer(server, {"X-API-Key": KEY_B}).shape == (2, 10)
    with pytest.raises(InferenceServerException) as refused:
        _http_infer(server, None)
    assert "no credential" in str(refused.value)


def test_tritonclient_grpc_with_headers(server: Server) -> None:
    assert _grpc_infer(server, {"authorization": f"Bearer {KEY_B}"}).shape == (2, 10)
    assert _grpc_infer(server, {"x-api-key": KEY_A}).shape == (2, 10)
    for headers, status in (
        (None, "UNAUTHENTICATED"),
        ({"authorization": "Bearer wrong"}, "PERMISSION_DENIED"),
        ({"x-api-key": ""}, "UNAUTHENTICATED"),
    ):
        with pytest.raises(InferenceServerException) as refused:
            _grpc_infer(server, headers)
        assert refused.value.status() == f"StatusCode.{status}", headers


def test_grpc_metadata_rpcs_need_a_key_too(server: Server) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        client = triton_grpc.InferenceServerClient(server.grpc_url)
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_metadata("digits")
        assert refused.value.status() == "StatusCode.UNAUTHENTICATED"
        assert client.get_model_metadata("digits", headers={"x-api-key": KEY_A}).name == "digits"
        client.close()
        del channel


def test_health_stays_open_on_both_protocols(server: Server) -> None:
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{server.url}{path}").status_code == 200
    client = triton_grpc.InferenceServerClient(server.grpc_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    client.close()
    # Everything else on the serving port asks for a key, including routes that do not exist.
    for path in ("/v2", "/v2/models/digits", "/metrics", "/nope"):
        assert httpx.get(f"{server.url}{path}").status_code == 401, path


def _raw_post(server: Server, header: bytes) -> tuple[int, dict]:
    """POST GOOD with one header line sent byte for byte (clients refuse to send some of these)."""
    body = json.dumps(GOOD).encode()
    request = (
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + b"Content-Length: %d\r\nConnection: close\r\n" % len(body)
        + header
        + b"\r\n\r\n"
        + body
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(payload)


# Each gets 401 (no usable credential) except a well-formed key that is not ours: 403.
HOSTILE: list[tuple[bytes, str]] = [
    (b"Authorization:", "'Bearer <API key>'"),
    (b"Authorization: Bearer", "no API key"),
    (b"Authorization: Bearer    ", "no API key"),
    (b"Authorization: bearer\t ", "no API key"),
    (b"Authorization: Basic " + KEY_A.encode(), "received scheme 'Basic'"),
    (b"Authorization: Bearer " + KEY_A.encode() + b" trailing", "invalid API key"),
    (b"Authorization: Bearer " + "ключ".encode(), "invalid API key"),
    (b"Authorization: \xff\xfe \x80", "(not printable)"),
    (b"X-API-Key:", "X-API-Key header is empty"),
    (b"X-API-Key: " + b"x" * 9000, "longer than 8192 bytes"),
]


@pytest.mark.parametrize(("header", "said"), HOSTILE, ids=range(len(HOSTILE)))
def test_careless_credentials_get_401_or_403_naming_the_problem(
    server: Server, header: bytes, said: str
) -> None:
    status, answer = _raw_post(server, header)
    assert status == (403 if said == "invalid API key" else 401), answer
    assert said in answer["error"]
    assert server.alive()


def test_a_huge_header_is_refused_without_a_5xx(server: Server) -> None:
    answer = httpx.post(
        f"{server.url}/v2/models/digits/infer",
        json=GOOD,
        headers={"Authorization": "Bearer " + "k" * 200_000},
    )
    assert answer.status_code == 401
    assert answer.json()["error"] == "the credential is longer than 8192 bytes"
    assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200


def test_empty_key_file_is_ignored_and_logged_by_name_only(server: Server) -> None:
    assert _raw_post(server, b"X-API-Key:  ")[0] == 401
    logs = server.logs()
    assert "key 'team-a/blank' is empty and is ignored" in logs
    assert KEY_A not in logs
    assert KEY_B not in logs


def test_usage_is_counted_per_key_name_never_its_value(server: Server) -> None:
    before = server.metrics()
    for _ in range(3):
        _http_infer(server, {"X-API-Key": KEY_A})
    _grpc_infer(server, {"x-api-key": KEY_A})
    httpx.post(f"{server.url}/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": "stolen"})
    after = server.metrics()

    def value(text: str, family: str) -> float:
        match = re.search(rf'{family}{{caller="team-a/key",model="digits"}} (\S+)', text)
        return float(match.group(1)) if match else 0.0

    assert value(after, "mserve_usage_requests_total") - value(before, "mserve_usage_requests_total") == 4
    assert value(after, "mserve_usage_rows_total") - value(before, "mserve_usage_rows_total") == 8
    assert value(after, "mserve_usage_compute_seconds_total") > value(
        before, "mserve_usage_compute_seconds_total"
    )
    sent = value(after, "mserve_usage_request_bytes_total") - value(
        before, "mserve_usage_request_bytes_total"
    )
    assert sent >= 4 * 2 * 64 * 4  # four requests of 2x64 FP32 at least
    assert value(after, "mserve_usage_response_bytes_total") > value(
        before, "mserve_usage_response_bytes_total"
    )
    callers = set(re.findall(r'mserve_usage_requests_total{caller="([^"]*)"', after))
    assert callers <= {"team-a/key", "team-b/ci"}, callers
    assert KEY_A not in after
    assert "stolen" not in after


def test_a_rotated_key_works_and_the_old_one_stops_without_a_restart(server: Server, keys_dir: Path) -> None:
    pid = server.proc.pid
    rotated = "a-rotated-77e1c0ffee"
    write_secret(keys_dir / "team-a", {"key": rotated, "blank": ""})

    def status(key: str) -> int:
        return httpx.post(
            f"{server.url}/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": key}
        ).status_code

    wait_until("the rotated key to be accepted", lambda: status(rotated) == 200, timeout=15, interval=0.3)
    assert status(KEY_A) == 403
    assert _grpc_infer(server, {"authorization": f"Bearer {rotated}"}).shape == (2, 10)
    assert server.proc.pid == pid
    assert server.alive()
    write_secret(keys_dir / "team-a", {"key": KEY_A, "blank": "  \n"})
    wait_until("the original key back", lambda: status(KEY_A) == 200, timeout=15, interval=0.3)


def test_a_missing_key_directory_refuses_everything_until_it_appears(
    digits: DigitsModel, tmp_path: Path
) -> None:
    keys = tmp_path / "not-yet"
    args = ("--auth", "apiKey", "--api-keys-dir", str(keys))
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as served:
        answer = httpx.post(f"{served.url}/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": KEY_A})
        assert answer.status_code == 403
        assert "no API keys configured" in answer.json()["error"]
        assert f"MSERVE_API_KEYS_DIR '{keys}' does not exist" in served.logs()
        write_secret(keys / "late", {"key": KEY_A})
        wait_until(
            "the late key to be accepted",
            lambda: (
                httpx.post(
                    f"{served.url}/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": KEY_A}
                ).status_code
                == 200
            ),
            timeout=15,
            interval=0.3,
        )


def test_a_key_directory_that_is_a_file_is_named_and_refuses_everything(
    digits: DigitsModel, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(KEY_A)
    args = ("--auth", "apiKey", "--api-keys-dir", str(keys))
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as served:
        answer = httpx.post(f"{served.url}/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": KEY_A})
        assert answer.status_code == 403
        assert f"MSERVE_API_KEYS_DIR '{keys}' cannot be read" in served.logs()


def test_usage_of_merged_batches_is_shared_by_rows(digits: DigitsModel, tmp_path: Path) -> None:
    write_secret(tmp_path / "keys" / "t", {"one": "key-one-1", "three": "key-three-3"})
    args = ("--auth", "apiKey", "--api-keys-dir", str(tmp_path / "keys"))
    args += ("--max-batch-size", "32", "--max-batch-delay-ms", "20")
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as served:

        def send(key: str, rows: int) -> int:
            body = {
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 64], "data": [0.5] * 64 * rows}]
            }
            url = f"{served.url}/v2/models/digits/infer"
            return httpx.post(url, json=body, headers={"X-API-Key": key}, timeout=30).status_code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:
            jobs = [("key-one-1", 1), ("key-three-3", 3)] * 10
            assert set(pool.map(lambda job: send(*job), jobs)) == {200}
        metrics = served.metrics()

    def value(family: str, caller: str) -> float:
        match = re.search(rf'{family}{{caller="{caller}",model="digits"}} (\S+)', metrics)
        assert match, (family, caller, metrics)
        return float(match.group(1))

    assert value("mserve_usage_requests_total", "t/one") == 10
    assert value("mserve_usage_rows_total", "t/one") == 10
    assert value("mserve_usage_rows_total", "t/three") == 30
    assert value("mserve_usage_compute_seconds_total", "t/one") > 0
    assert value("mserve_usage_compute_seconds_total", "t/three") > 0
    merged = re.search(r'mserve_batch_size_count{model="digits"} (\S+)', metrics)
    assert merged, metrics
    assert float(merged.group(1)) < 20  # some requests shared a run


def test_refused_credentials_give_back_their_admission_slot(
    digits: DigitsModel, keys_dir: Path, tmp_path: Path
) -> None:
    """The HTTP protocol takes a request's in-flight slot before the app runs (rest_shedding.py);
    a request that access control then refuses must give it back, or a few hundred refused
    requests would leave a pod answering every client 503."""
    args = ("--auth", "apiKey", "--api-keys-dir", str(keys_dir), "--max-in-flight", "2")
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as served:
        with httpx.Client(base_url=served.url) as client:
            for headers in ({}, {"Authorization": "Bearer nope"}) * 50:
                refused = client.post("/v2/models/digits/infer", json=GOOD, headers=headers)
                assert refused.status_code == (403 if headers else 401)
            answer = client.post("/v2/models/digits/infer", json=GOOD, headers={"X-API-Key": KEY_A})
        assert answer.status_code == 200, answer.text
