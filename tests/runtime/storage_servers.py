"""Real storage servers on loopback for the fetch tests: an HTTP server (S3: tests.support.s3_store)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class _Handler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/truncated":
            # Promise more bytes than are sent, then hang up: a dropped connection mid-download.
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path == "/forbidden":
            self.send_error(403)
            return
        super().do_GET()


@dataclass
class HttpServer:
    url: str
    root: Path


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    root = tmp_path_factory.mktemp("www")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpServer(f"http://127.0.0.1:{server.server_address[1]}", root)
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def mserve() -> Path:
    """The `mserve` console script of the environment running the tests."""
    return Path(sys.executable).parent / "mserve"
