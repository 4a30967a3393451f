"""Real storage servers on loopback for the fetch tests: HTTP and HTTPS servers (S3: tests.support)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote

import pytest


class _Handler(SimpleHTTPRequestHandler):
    """Files under the server's root, plus a few paths that misbehave on purpose."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        self.server.seen.append((path, self.headers.get("Authorization")))
        if path == "/truncated":
            # Promise more bytes than are sent, then hang up: a dropped connection mid-download.
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"x" * 1000)
            self.wfile.flush()
            self.close_connection = True
            return
        if path == "/forbidden":
            self.send_error(403)
            return
        if path in ("/redirect", "/loop"):
            # /redirect?to=URL answers 302 to URL; /loop redirects to itself forever.
            target = parse_qs(query)["to"][0] if path == "/redirect" else "/loop"
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if path == "/unsized":
            # A body without Content-Length: only counting while streaming can cap it.
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"u" * self.server.unsized_bytes)
            self.close_connection = True
            return
        if path.startswith("/private/"):
            if self.headers.get("Authorization") != self.server.authorization:
                self.send_error(401)
                return
            self.path = self.path.removeprefix("/private")
        super().do_GET()


class _Server(ThreadingHTTPServer):
    # What each request carried, as (path, Authorization header or None).
    seen: list[tuple[str, str | None]]
    # The Authorization header /private/... demands.
    authorization: str | None = None
    unsized_bytes: int = 1 << 20


@dataclass
class HttpServer:
    url: str
    root: Path
    server: _Server

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.server.seen

    def require(self, authorization: str) -> None:
        self.server.authorization = authorization

    def redirect_to(self, target: str) -> str:
        """A URL on this server that answers with a redirect to `target`."""
        return f"{self.url}/redirect?to={quote(target, safe='')}"


def _serve(root: Path, tls: ssl.SSLContext | None) -> HttpServer:
    server = _Server(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    server.seen = []
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls else "http"
    return HttpServer(f"{scheme}://127.0.0.1:{server.server_address[1]}", root, server)


def _stop(server: HttpServer) -> None:
    server.server.shutdown()
    server.server.server_close()


@pytest.fixture
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    served = _serve(tmp_path_factory.mktemp("www"), None)
    yield served
    _stop(served)


@pytest.fixture
def other_http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A second plain-http server: another host, as far as a redirect policy can tell (another port)."""
    served = _serve(tmp_path_factory.mktemp("www-other"), None)
    yield served
    _stop(served)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost that is its own CA, and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mserve test server")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_server(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HttpServer]:
    """An https server whose certificate this process (and its children) trust via SSL_CERT_FILE."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    served = _serve(tmp_path_factory.mktemp("www-tls"), context)
    yield served
    _stop(served)


@pytest.fixture(scope="session")
def mserve() -> Path:
    """The `mserve` console script of the environment running the tests."""
    return Path(sys.executable).parent / "mserve"
