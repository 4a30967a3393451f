"""`fetch` from http(s)://, file://, pvc:// and local paths, and the `mserve fetch` command."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from mserve_runtime.fetch import FetchError, exists, fetch, upload
from storage_servers import HttpServer

from tests.support.ports import free_port

MODEL = bytes(range(256)) * 4096


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fetches_over_http_with_a_digest(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)

    result = fetch(f"{http_server.url}/model.onnx", tmp_path / "m.onnx", sha256=sha(MODEL))

    assert result.path.read_bytes() == MODEL
    assert (result.sha256, result.size_bytes) == (sha(MODEL), len(MODEL))


def test_http_status_is_named(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"/missing.onnx: HTTP 404 Not Found$"):
        fetch(f"{http_server.url}/missing.onnx", tmp_path / "m.onnx")
    with pytest.raises(FetchError, match="HTTP 403 Forbidden"):
        fetch(f"{http_server.url}/forbidden", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_connection_refused_is_named(tmp_path: Path) -> None:
    port = free_port()

    uri = f"http://127.0.0.1:{port}/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx")

    assert str(caught.value) == f"{uri}: connection refused"


def test_a_dropped_connection_leaves_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="connection closed after 1000"):
        fetch(f"{http_server.url}/truncated", tmp_path / "m.onnx")

    assert list(tmp_path.iterdir()) == []


def test_http_sha256_mismatch_leaves_nothing(http_server: HttpServer, tmp_path: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)

    with pytest.raises(FetchError, match=f"expected {'a' * 64}, got {sha(MODEL)}"):
        fetch(f"{http_server.url}/model.onnx", tmp_path / "m.onnx", sha256="a" * 64)

    assert list(tmp_path.iterdir()) == []


def test_file_uri_and_plain_path(tmp_path: Path) -> None:
    src = tmp_path / "src" / "model.onnx"
    src.parent.mkdir()
    src.write_bytes(MODEL)

    from_uri = fetch(f"file://{src}", tmp_path / "a.onnx")
    from_path = fetch(str(src), tmp_path / "b.onnx")

    assert from_uri.path.read_bytes() == from_path.path.read_bytes() == MODEL


def test_pvc_uri_reads_under_the_mount_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSERVE_PVC_ROOT", str(tmp_path / "pvc"))
    (tmp_path / "pvc" / "models" / "digits").mkdir(parents=True)
    (tmp_path / "pvc" / "models" / "digits" / "model.onnx").write_bytes(MODEL)

    result = fetch("pvc://models/digits/model.onnx", tmp_path / "m.onnx")

    assert result.path.read_bytes() == MODEL
    with pytest.raises(FetchError, match=r"without '\.\.'"):
        fetch("pvc://models/../../etc/passwd", tmp_path / "x")


def test_into_an_existing_directory_keeps_the_source_name(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(MODEL)
    (tmp_path / "models").mkdir()

    result = fetch(str(src), tmp_path / "models")

    assert result.path == tmp_path / "models" / "model.onnx"
    assert result.path.read_bytes() == MODEL


def test_a_local_directory_fills_an_existing_mount_point(tmp_path: Path) -> None:
    src = tmp_path / "artifact"
    (src / "tokenizer").mkdir(parents=True)
    (src / "model.onnx").write_bytes(MODEL)
    (src / "tokenizer" / "vocab.txt").write_text("[CLS]\n")
    mount = tmp_path / "mnt"
    mount.mkdir()

    result = fetch(f"file://{src}", mount)

    assert sorted(p.relative_to(mount).as_posix() for p in mount.rglob("*")) == [
        "model.onnx",
        "tokenizer",
        "tokenizer/vocab.txt",
    ]
    assert result.files == 2


def test_bad_scheme_lists_the_supported_ones(tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch("ftp://example.com/model.onnx", tmp_path / "m.onnx")

    assert str(caught.value) == (
        'ftp://example.com/model.onnx: unsupported scheme "ftp://" '
        "(supported: s3://, http://, https://, pvc://, file://, or a local path)"
    )


def test_missing_local_file_and_malformed_digest(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such file or directory"):
        fetch(str(tmp_path / "nope.onnx"), tmp_path / "m.onnx")
    with pytest.raises(FetchError, match="is not 64 hex digits"):
        fetch(str(tmp_path / "nope.onnx"), tmp_path / "m.onnx", sha256="abc")


def test_upload_to_a_local_directory_and_exists(tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "model.onnx").write_bytes(MODEL)
    (artifact / "report.json").write_text("{}")
    store = f"file://{tmp_path}/store/abc"

    assert not exists(store)
    upload(artifact, store)

    assert exists(store)
    assert exists(f"{store}/report.json")
    assert (tmp_path / "store" / "abc" / "model.onnx").read_bytes() == MODEL
    with pytest.raises(FetchError, match="not http"):
        upload(artifact, "https://example.com/x")


def test_cli_prints_size_and_digest(http_server: HttpServer, tmp_path: Path, mserve: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)

    done = subprocess.run(
        [mserve, "fetch", f"{http_server.url}/model.onnx", tmp_path / "m.onnx"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert "1.0 MiB" in done.stdout
    assert f"sha256 {sha(MODEL)}" in done.stdout


def test_cli_fails_with_one_line_and_no_traceback(tmp_path: Path, mserve: Path) -> None:
    port = free_port()
    command = [mserve, "fetch", f"http://127.0.0.1:{port}/model.onnx", str(tmp_path / "m.onnx")]

    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 1
    uri = f"http://127.0.0.1:{port}/model.onnx"
    assert done.stderr == f"error: {uri}: connection refused\n"
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_a_local_file_over_the_cap_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(MODEL)

    with pytest.raises(FetchError, match=f"is {len(MODEL)} bytes, more than the size cap of 1000 bytes"):
        fetch(str(src), tmp_path / "out" / "m.onnx", max_bytes=1000)

    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_the_cap_covers_a_whole_directory(tmp_path: Path) -> None:
    src = tmp_path / "artifact"
    src.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (src / name).write_bytes(b"x" * 1000)

    with pytest.raises(FetchError, match="stopped after more than the size cap of 2500 bytes"):
        fetch(f"file://{src}", tmp_path / "model", max_bytes=2500)

    assert not (tmp_path / "model").exists()
    assert fetch(f"file://{src}", tmp_path / "model", max_bytes=3000).files == 3


def _run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("flags", "env", "message"),
    [
        (
            ["--role", "admin"],
            {},
            "Invalid value for --role: unknown role 'admin' (expected one of: source, store)",
        ),
        (["--role", ""], {}, "Invalid value for --role: unknown role ''"),
        (
            ["--max-bytes", "-5"],
            {},
            "--max-bytes (or MSERVE_FETCH_MAX_BYTES) must be a positive number of bytes, got -5",
        ),
        ([], {"MSERVE_FETCH_MAX_BYTES": "10GB"}, "must be a whole number of bytes, got '10GB'"),
        (["--sha256", "abc123"], {}, "expected sha256 'abc123' is not 64 hex digits"),
    ],
)
def test_cli_names_a_careless_option(
    tmp_path: Path, mserve: Path, flags: list[str], env: dict[str, str], message: str
) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(MODEL)

    done = _run(mserve, "fetch", src, tmp_path / "out.onnx", *flags, env=env)

    assert done.returncode in (1, 2)
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out.onnx").exists()


def test_cli_size_cap_from_the_environment(http_server: HttpServer, tmp_path: Path, mserve: Path) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    uri = f"{http_server.url}/model.onnx"

    done = _run(mserve, "fetch", uri, tmp_path / "m.onnx", env={"MSERVE_FETCH_MAX_BYTES": "4096"})

    assert done.returncode == 1
    assert done.stderr == (
        f"error: {uri}: the response (Content-Length) is {len(MODEL)} bytes, more than the size cap of "
        "4096 bytes (--max-bytes / MSERVE_FETCH_MAX_BYTES)\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_digest_mismatch_names_both_and_leaves_nothing(
    http_server: HttpServer, tmp_path: Path, mserve: Path
) -> None:
    (http_server.root / "model.onnx").write_bytes(MODEL)
    uri = f"{http_server.url}/model.onnx"
    wrong = "f" * 64

    done = _run(mserve, "fetch", uri, tmp_path / "m.onnx", "--sha256", wrong)

    assert done.returncode == 1
    assert done.stderr == f"error: {uri}: sha256 mismatch: expected {wrong}, got {sha(MODEL)}\n"
    assert list(tmp_path.iterdir()) == []  # no model, no .partial


def _fetch_cli(mserve: Path, *args: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [mserve, "fetch", *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_fetches_many_items_in_one_process(http_server: HttpServer, tmp_path: Path, mserve: Path) -> None:
    """A pool pod's members: one process, one `--item URI DEST SHA256` each ('-': no digest)."""
    for name in ("a", "b", "c"):
        (http_server.root / f"{name}.onnx").write_bytes(MODEL + name.encode())
    done = _fetch_cli(
        mserve,
        "--item", f"{http_server.url}/a.onnx", tmp_path / "a.onnx", sha(MODEL + b"a"),
        "--item", f"{http_server.url}/b.onnx", tmp_path / "b.onnx", "-",
        "--item", f"{http_server.url}/c.onnx", tmp_path / "c.onnx", sha(MODEL + b"c"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("fetched ") == 3
    for name in ("a", "b", "c"):
        assert (tmp_path / f"{name}.onnx").read_bytes() == MODEL + name.encode()


def test_cli_many_items_stop_at_the_first_failure_naming_it(
    http_server: HttpServer, tmp_path: Path, mserve: Path
) -> None:
    (http_server.root / "a.onnx").write_bytes(MODEL)
    done = _fetch_cli(
        mserve,
        "--item", f"{http_server.url}/a.onnx", tmp_path / "a.onnx", "-",
        "--item", f"{http_server.url}/a.onnx", tmp_path / "wrong.onnx", "0" * 64,
        "--item", f"{http_server.url}/a.onnx", tmp_path / "never.onnx", "-",
    )  # fmt: skip
    assert done.returncode == 1
    assert "sha256" in done.stderr.lower()
    assert "a.onnx" in done.stderr
    assert (tmp_path / "a.onnx").exists()
    assert not (tmp_path / "wrong.onnx").exists()
    assert not (tmp_path / "never.onnx").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ((), "nothing to fetch"),
        (("http://127.0.0.1:1/a.onnx",), "URI and DEST together"),
        (("--item", "http://127.0.0.1:1/a.onnx", "/tmp/x.onnx"), "--item"),
    ],
)
def test_cli_careless_arguments_are_usage_errors(
    tmp_path: Path, mserve: Path, args: tuple, says: str
) -> None:
    done = _fetch_cli(mserve, *args)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
