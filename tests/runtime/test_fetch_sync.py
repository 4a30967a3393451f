"""`mserve fetch --sync`: a directory kept in step with a list of artifacts (a pool pod's
sidecar), over a real HTTP server and real files, in-process and as the real command."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import time
from pathlib import Path

import pytest
from mserve_runtime import fetch_sync
from mserve_runtime.fetch_sync import DirectorySync
from storage_servers import HttpServer

A = b"model a" * 1000
B = b"model b" * 1000
C = b"model c, second version" * 1000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item(name: str, uri: str, digest: str = "-") -> dict:
    return {"name": name, "uri": uri, "file": f"{name}.onnx", "sha256": digest}


def write_list(path: Path, items: list) -> None:
    path.write_text(json.dumps(items))


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    models = tmp_path / "models"
    models.mkdir()
    return tmp_path / "members.json", models, models / ".sync-0.json"


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if not p.name.startswith("."))


def test_fetches_replaces_and_deletes_as_the_list_changes(
    http_server: HttpServer, setup: tuple[Path, Path, Path]
) -> None:
    members, models, state = setup
    (http_server.root / "a.onnx").write_bytes(A)
    (http_server.root / "b.onnx").write_bytes(B)
    (http_server.root / "c.onnx").write_bytes(C)
    url = http_server.url
    write_list(members, [item("a", f"{url}/a.onnx", sha(A)), item("b", f"{url}/b.onnx")])
    sync = DirectorySync(members, models, state)

    sync.sync_once()

    assert listing(models) == ["a.onnx", "b.onnx"]
    assert (models / "a.onnx").read_bytes() == A
    assert fetch_sync.is_synced(state)
    inode_a = (models / "a.onnx").stat().st_ino

    # b leaves, c joins, a's artifact changes (a new URI and digest): one pass does all three
    write_list(members, [item("a", f"{url}/c.onnx", sha(C)), item("c", f"{url}/c.onnx")])
    sync.sync_once()

    assert listing(models) == ["a.onnx", "c.onnx"]
    assert (models / "a.onnx").read_bytes() == C
    assert (models / "a.onnx").stat().st_ino != inode_a  # renamed into place, not rewritten
    assert [p.name for p in models.iterdir() if p.name.endswith(".partial")] == []

    # an unchanged list fetches nothing: the files stay the same inodes
    before = {name: (models / name).stat().st_ino for name in listing(models)}
    sync.sync_once()
    assert {name: (models / name).stat().st_ino for name in listing(models)} == before


def test_a_bad_item_is_named_retried_later_and_leaves_the_others(
    http_server: HttpServer,
    setup: tuple[Path, Path, Path],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    members, models, state = setup
    monkeypatch.setattr(fetch_sync, "FIRST_RETRY_S", 0.3)
    (http_server.root / "a.onnx").write_bytes(A)
    (http_server.root / "b.onnx").write_bytes(B)
    write_list(
        members,
        [
            item("baddigest", f"{http_server.url}/a.onnx", "0" * 64),
            item("missing", f"{http_server.url}/nothing-here.onnx"),
            item("a", f"{http_server.url}/a.onnx", sha(A)),
            item("b", f"{http_server.url}/b.onnx", sha(B)),
        ],
    )
    sync = DirectorySync(members, models, state)

    with caplog.at_level(logging.INFO, logger="mserve.fetch.sync"):
        sync.sync_once()

    assert listing(models) == ["a.onnx", "b.onnx"]
    assert fetch_sync.is_synced(state)  # the first pass is done although two items failed
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(m.startswith("baddigest: fetch failed") and "sha256 mismatch" in m for m in errors)
    assert any(m.startswith("missing: fetch failed") and "HTTP 404" in m for m in errors)

    # within the delay, the failed items are not tried again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mserve.fetch.sync"):
        sync.sync_once()
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]

    # the object appears: the next try after the delay fetches it
    (http_server.root / "nothing-here.onnx").write_bytes(B)
    time.sleep(0.35)
    sync.sync_once()
    assert listing(models) == ["a.onnx", "b.onnx", "missing.onnx"]
    # the delay doubles for the one still failing
    assert sync.retries["baddigest.onnx"].delay_s == pytest.approx(0.6)


def test_deletes_only_files_it_wrote_and_nothing_on_an_unreadable_list(
    http_server: HttpServer, setup: tuple[Path, Path, Path]
) -> None:
    members, models, state = setup
    (http_server.root / "a.onnx").write_bytes(A)
    (models / "other.onnx").write_bytes(B)  # another sidecar's file
    write_list(members, [item("a", f"{http_server.url}/a.onnx")])
    sync = DirectorySync(members, models, state)
    sync.sync_once()

    members.write_text("{not json")
    sync.sync_once()
    assert listing(models) == ["a.onnx", "other.onnx"]
    members.unlink()
    sync.sync_once()
    assert listing(models) == ["a.onnx", "other.onnx"]

    # a restarted sidecar reads what it wrote from its state file; a replaced file is not its own
    (models / "a.onnx").unlink()
    (models / "a.onnx").write_bytes(C)
    write_list(members, [])
    DirectorySync(members, models, state).sync_once()
    assert listing(models) == ["a.onnx", "other.onnx"]


def test_careless_entries_are_refused_by_name_and_the_rest_synced(
    http_server: HttpServer, setup: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    members, models, state = setup
    (http_server.root / "a.onnx").write_bytes(A)
    uri = f"{http_server.url}/a.onnx"
    write_list(
        members,
        [
            {"name": "escape", "uri": uri, "file": "../escape.onnx", "sha256": "-"},
            {"name": "hidden", "uri": uri, "file": ".sync-0.json", "sha256": "-"},
            {"name": "nouri", "file": "nouri.onnx", "sha256": "-"},
            {"name": "baddigest", "uri": uri, "file": "bd.onnx", "sha256": "not-hex"},
            "a string",
            item("a", uri),
            {"name": "twice", "uri": uri, "file": "a.onnx", "sha256": "-"},
        ],
    )

    with caplog.at_level(logging.INFO, logger="mserve.fetch.sync"):
        DirectorySync(members, models, state).sync_once()

    assert listing(models) == ["a.onnx"]
    assert not (models.parent / "escape.onnx").exists()
    errors = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    for name in ("'escape'", "'hidden'", "'nouri'", "baddigest", "item 4", "'twice'"):
        assert name in errors


def test_the_command_syncs_until_stopped_and_its_probe_waits_for_the_first_pass(
    http_server: HttpServer, setup: tuple[Path, Path, Path], mserve: Path
) -> None:
    members, models, state = setup
    (http_server.root / "a.onnx").write_bytes(A)
    (http_server.root / "b.onnx").write_bytes(B)
    write_list(members, [item("a", f"{http_server.url}/a.onnx", sha(A))])

    def probe() -> int:
        return subprocess.run([mserve, "fetch", "--state", state], timeout=30, check=False).returncode

    assert probe() == 1
    command = [mserve, "fetch", "--sync", members, "--into", models, "--state", state, "--interval", "0.2"]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while probe() != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listing(models) == ["a.onnx"]

        started = time.monotonic()
        write_list(members, [item("b", f"{http_server.url}/b.onnx", sha(B))])
        while listing(models) != ["b.onnx"] and time.monotonic() - started < 10:
            time.sleep(0.05)
        assert listing(models) == ["b.onnx"]
        assert time.monotonic() - started < 5
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert "a: fetched" in stderr
    assert "b: fetched" in stderr
    assert "a: left the list, deleted a.onnx" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sync", "x.json", "--into", "."], "--state"),
        (["--sync", "x.json", "--state", "s.json"], "--into"),
        (["--sync", "x.json", "--into", ".", "--state", "s", "--item", "u", "d", "-"], "take no URI DEST"),
        (["http://127.0.0.1:9/m.onnx", "m.onnx", "--state", "s"], "take no URI DEST"),
        (["--sync", "x.json", "--into", "no-such-dir", "--state", "s"], "not a directory"),
        (["--sync", "x.json", "--into", ".", "--state", "s", "--interval", "0"], "--interval"),
    ],
)
def test_careless_sync_options_are_usage_errors(
    args: list[str], message: str, mserve: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [mserve, "fetch", *args], capture_output=True, text=True, timeout=30, check=False, cwd=tmp_path
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
