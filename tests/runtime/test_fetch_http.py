"""http(s) sources as an attacker would serve them: credentials, redirects, sizes and error text."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import pytest
from mserve_runtime.fetch import FetchError, fetch
from storage_servers import HttpServer

from tests.support.ports import free_port

MODEL = bytes(range(256)) * 1024
TOKEN = "s3cr3t-t0ken"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def assert_no_address(message: str, *servers: HttpServer) -> None:
    for server in servers:
        port = server.url.rsplit(":", 1)[1]
        assert f":{port}" not in message, message
    assert not re.search(r"\d+\.\d+\.\d+\.\d+", message), message


@pytest.fixture
def private_model(http_server: HttpServer) -> str:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    return f"{http_server.url}/private/model.onnx"


def test_sends_the_source_bearer_token(
    http_server: HttpServer, private_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_SOURCE_token", TOKEN + "\n")  # as a Secret made from a file has it

    result = fetch(private_model, tmp_path / "m.onnx", role="source", sha256=sha(MODEL))

    assert result.path.read_bytes() == MODEL
    assert http_server.seen == [("/private/model.onnx", f"Bearer {TOKEN}")]


def test_sends_basic_auth_from_a_basic_auth_secret(
    http_server: HttpServer, private_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.require(basic("team-a", "pa:ss word"))
    monkeypatch.setenv("MSERVE_SOURCE_username", "team-a")
    monkeypatch.setenv("MSERVE_SOURCE_password", "pa:ss word")

    assert fetch(private_model, tmp_path / "m.onnx", role="source").path.read_bytes() == MODEL


def test_wrong_credentials_get_a_clear_401_naming_the_uri(
    http_server: HttpServer, private_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_SOURCE_token", "not-the-token")

    with pytest.raises(FetchError) as caught:
        fetch(private_model, tmp_path / "m.onnx", role="source")

    assert str(caught.value) == (
        f"{private_model}: HTTP 401 Unauthorized: the server refused the credentials from MSERVE_SOURCE_token"
    )
    assert "not-the-token" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_no_credentials_401_says_how_to_give_them(
    http_server: HttpServer, private_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_STORE_token", TOKEN)  # the other role's: never sent for a source

    with pytest.raises(
        FetchError, match=r"HTTP 401 Unauthorized: no credentials were sent; .*MSERVE_SOURCE_token"
    ):
        fetch(private_model, tmp_path / "m.onnx", role="source")

    assert http_server.seen == [("/private/model.onnx", None)]


def test_without_a_role_no_credentials_are_sent(
    http_server: HttpServer, private_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_SOURCE_token", TOKEN)

    with pytest.raises(FetchError, match="HTTP 401"):
        fetch(private_model, tmp_path / "m.onnx")

    assert http_server.seen == [("/private/model.onnx", None)]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MSERVE_SOURCE_token": "abc\r\nX-Injected: 1"}, "MSERVE_SOURCE_token holds a control character"),
        (
            {"MSERVE_SOURCE_token": "abc", "MSERVE_SOURCE_username": "u"},
            "set either MSERVE_SOURCE_token or MSERVE_SOURCE_username/MSERVE_SOURCE_password, not both",
        ),
        (
            {"MSERVE_SOURCE_username": "u"},
            "MSERVE_SOURCE_username and MSERVE_SOURCE_password must be set together",
        ),
        (
            {"MSERVE_SOURCE_username": "a:b", "MSERVE_SOURCE_password": "p"},
            "MSERVE_SOURCE_username must not contain ':'",
        ),
    ],
)
def test_careless_credentials_are_refused_before_anything_is_sent(
    http_server: HttpServer,
    private_model: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    message: str,
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(FetchError) as caught:
        fetch(private_model, tmp_path / "m.onnx", role="source")

    assert str(caught.value).startswith(f"{private_model}: {message}")
    assert "X-Injected" not in str(caught.value)
    assert http_server.seen == []


def test_credentials_in_the_uri_are_refused_and_not_echoed(http_server: HttpServer, tmp_path: Path) -> None:
    uri = http_server.url.replace("http://", "http://alice:hunter2@") + "/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx", role="source")

    assert "hunter2" not in str(caught.value)
    assert "credentials in the URI are not supported" in str(caught.value)
    assert http_server.seen == []


def test_a_redirect_from_https_to_http_is_refused(
    https_server: HttpServer, http_server: HttpServer, tmp_path: Path
) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    uri = https_server.redirect_to(f"{http_server.url}/model.onnx")

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx")

    assert str(caught.value) == f"{uri}: refused a redirect from https to http"
    assert http_server.seen == []
    assert list(tmp_path.iterdir()) == []


def test_a_redirect_to_another_hosts_http_is_refused(
    http_server: HttpServer, other_http_server: HttpServer, tmp_path: Path
) -> None:
    (other_http_server.root / "model.onnx").write_bytes(MODEL)
    uri = http_server.redirect_to(f"{other_http_server.url}/model.onnx")

    with pytest.raises(FetchError, match="refused a redirect to http on another host") as caught:
        fetch(uri, tmp_path / "m.onnx")

    assert other_http_server.seen == []
    assert_no_address(str(caught.value).removeprefix(uri), other_http_server)


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://example.com/model.onnx"])
def test_a_redirect_to_another_scheme_is_refused(
    http_server: HttpServer, tmp_path: Path, target: str
) -> None:
    uri = http_server.redirect_to(target)

    with pytest.raises(FetchError, match=r"refused a redirect to a (file|ftp): URL$"):
        fetch(uri, tmp_path / "passwd")

    assert list(tmp_path.iterdir()) == []


def test_redirects_are_bounded(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="more than 5 redirects in a row"):
        fetch(f"{http_server.url}/loop", tmp_path / "m.onnx")

    assert len(http_server.seen) == 6


def test_credentials_follow_a_redirect_within_the_host_only(
    http_server: HttpServer, https_server: HttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    (https_server.root / "model.onnx").write_bytes(MODEL)
    http_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_SOURCE_token", TOKEN)

    # Same host: allowed, token kept. To https elsewhere: allowed, token dropped.
    same_host = fetch(http_server.redirect_to("/private/model.onnx"), tmp_path / "a.onnx", role="source")
    elsewhere = fetch(
        http_server.redirect_to(f"{https_server.url}/model.onnx"), tmp_path / "b.onnx", role="source"
    )

    assert same_host.path.read_bytes() == elsewhere.path.read_bytes() == MODEL
    assert http_server.seen[:2] == [
        ("/redirect", f"Bearer {TOKEN}"),
        ("/private/model.onnx", f"Bearer {TOKEN}"),
    ]
    assert https_server.seen == [("/model.onnx", None)]


def test_errors_after_a_redirect_name_no_internal_address(http_server: HttpServer, tmp_path: Path) -> None:
    dead = f"https://127.0.0.1:{free_port()}/model.onnx"
    uri = http_server.redirect_to(dead).replace("127.0.0.1", "localhost")

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx")

    assert str(caught.value) == f"{uri}: connection refused (after a redirect)"
    assert_no_address(str(caught.value).removeprefix(uri))
    assert dead.rsplit(":", 1)[1].split("/")[0] not in str(caught.value).removeprefix(uri)


def test_a_status_after_a_redirect_shows_the_standard_phrase_only(
    http_server: HttpServer, tmp_path: Path
) -> None:
    uri = http_server.redirect_to("/missing.onnx")

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx")

    assert str(caught.value) == f"{uri}: HTTP 404 Not Found (after a redirect)"


def test_an_untrusted_certificate_is_named(
    https_server: HttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "no-such-bundle.pem"))
    (https_server.root / "model.onnx").write_bytes(MODEL)

    with pytest.raises(FetchError, match="TLS certificate not trusted: "):
        fetch(f"{https_server.url}/model.onnx", tmp_path / "m.onnx")


def test_a_declared_size_over_the_cap_is_refused_up_front(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    uri = f"{http_server.url}/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx", max_bytes=len(MODEL) - 1)

    assert str(caught.value) == (
        f"{uri}: the response (Content-Length) is {len(MODEL)} bytes, more than the size cap of "
        f"{len(MODEL) - 1} bytes (--max-bytes / MSERVE_FETCH_MAX_BYTES)"
    )
    assert list(tmp_path.iterdir()) == []
    assert fetch(uri, tmp_path / "m.onnx", max_bytes=len(MODEL)).size_bytes == len(MODEL)


def test_an_unsized_body_is_stopped_at_the_cap(http_server: HttpServer, tmp_path: Path) -> None:
    http_server.server.unsized_bytes = 5 << 20

    with pytest.raises(FetchError, match=r"/unsized: stopped after more than the size cap of 1048576 bytes"):
        fetch(f"{http_server.url}/unsized", tmp_path / "m.onnx", max_bytes=1 << 20)

    assert list(tmp_path.iterdir()) == []


def test_a_401_past_a_redirect_to_another_host_says_no_credentials_went_there(
    http_server: HttpServer, https_server: HttpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    https_server.require(f"Bearer {TOKEN}")
    monkeypatch.setenv("MSERVE_SOURCE_token", TOKEN)
    uri = http_server.redirect_to(f"{https_server.url}/private/model.onnx")

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx", role="source")

    assert str(caught.value) == (
        f"{uri}: HTTP 401 Unauthorized: credentials go only to the URI's own host, "
        "not where it redirected (after a redirect)"
    )
    assert https_server.seen == [("/private/model.onnx", None)]
