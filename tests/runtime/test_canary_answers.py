"""What a stable `mserve serve` does with the bytes of its canary's answer: one larger than
MSERVE_MAX_REQUEST_BYTES (declared or streamed) is never read whole and the stable serves the
request itself; an encoded one goes to the client as it came. The canary here is a plain HTTP
server on loopback that answers what the query asks of it (the stable forwards the query)."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.runtime.test_canary import BODY, INFER, apply, metric, split
from tests.support.models import build_tiny_mlp
from tests.support.polling import wait_until
from tests.support.serving import Server, serving

LIMIT = 64 << 10
ENCODED = gzip.compress(b'{"model_name": "tiny", "model_version": "2", "outputs": []}')


class _Canary(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = self.path.partition("answer=")[2]
        try:
            if answer == "declared":  # a length over the limit, announced up front
                self._send(b"x" * (4 * LIMIT), {"Content-Type": "application/json"})
            elif answer == "streamed":  # chunked: no length until it is all there
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(16):
                    self.wfile.write(b"%x\r\n%s\r\n" % (LIMIT // 4, b"x" * (LIMIT // 4)))
                self.wfile.write(b"0\r\n\r\n")
            else:
                self._send(ENCODED, {"Content-Type": "application/json", "Content-Encoding": "gzip"})
        except OSError:
            pass  # the stable hung up on an answer it would not read

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def canary() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canary)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def rollout_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("rollout") / "rollout.json"


@pytest.fixture(scope="module")
def stable(rollout_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("stable")
    model = build_tiny_mlp(root / "tiny.onnx")
    args = ("--rollout-file", str(rollout_file), "--max-request-bytes", str(LIMIT))
    with serving(model, "tiny", root / "mserve.log", *args, env={"MSERVE_MODEL_VERSION": "1"}) as server:
        yield server


@pytest.mark.parametrize("answer", ["declared", "streamed"])
def test_an_answer_over_the_limit_is_served_by_the_stable(
    stable: Server, canary: str, rollout_file: Path, answer: str
) -> None:
    apply(stable, rollout_file, split(canary, 100))
    failed = metric(stable, "mserve_canary_forwarded_total", 'outcome="failed"')
    for _ in range(3):  # the connection it hung up on is not reused for the next
        response = httpx.post(f"{stable.url}{INFER}?answer={answer}", json=BODY, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == "1"
    assert metric(stable, "mserve_canary_forwarded_total", 'outcome="failed"') == failed + 3
    assert stable.alive()


def test_a_mirrored_answer_over_the_limit_is_an_error(
    stable: Server, canary: str, rollout_file: Path
) -> None:
    apply(stable, rollout_file, split(canary, 0, 100))
    errors = metric(stable, "mserve_shadow_comparisons_total", 'result="error"')
    response = httpx.post(f"{stable.url}{INFER}?answer=streamed", json=BODY, timeout=10)
    assert response.status_code == 200
    wait_until(
        "the mirror counted as an error",
        lambda: metric(stable, "mserve_shadow_comparisons_total", 'result="error"') == errors + 1,
        timeout=10,
        interval=0.1,
    )


def test_an_encoded_answer_goes_to_the_client_as_it_came(
    stable: Server, canary: str, rollout_file: Path
) -> None:
    apply(stable, rollout_file, split(canary, 100))
    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{stable.url}{INFER}?answer=gzip", json=BODY) as response,
    ):
        raw = b"".join(response.iter_raw())
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
    assert raw == ENCODED
