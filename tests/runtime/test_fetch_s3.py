"""`fetch`, `upload` and `exists` against a real S3-compatible server (moto in server mode)."""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest
from mserve_runtime import fetch as fetch_module
from mserve_runtime import storage_s3
from mserve_runtime.fetch import FetchError, exists, fetch, upload

from tests.support.ports import free_port
from tests.support.s3_store import S3Server

MODEL = b"\x08\x07onnx-model-bytes" * 5000


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def bucket(s3: S3Server) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    s3.client.create_bucket(Bucket=name)
    return name


def test_fetches_an_object_and_reports_its_digest(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.put(bucket, "models/digits/model.onnx", MODEL)

    result = fetch(f"s3://{bucket}/models/digits/model.onnx", tmp_path / "out" / "model.onnx")

    assert result.path == tmp_path / "out" / "model.onnx"
    assert result.path.read_bytes() == MODEL
    assert (result.sha256, result.size_bytes, result.files) == (sha(MODEL), len(MODEL), 1)
    assert result.seconds > 0


def test_accepts_the_expected_sha256(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.put(bucket, "model.onnx", MODEL)

    result = fetch(f"s3://{bucket}/model.onnx", tmp_path / "m.onnx", sha256="sha256:" + sha(MODEL).upper())

    assert result.path.read_bytes() == MODEL


def test_sha256_mismatch_names_both_digests_and_leaves_nothing(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3.put(bucket, "model.onnx", MODEL)
    wrong = "0" * 64

    with pytest.raises(FetchError) as caught:
        fetch(f"s3://{bucket}/model.onnx", tmp_path / "m.onnx", sha256=wrong)

    assert f"expected {wrong}, got {sha(MODEL)}" in str(caught.value)
    assert f"s3://{bucket}/model.onnx" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_fetch_keeps_the_previous_file(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.put(bucket, "model.onnx", MODEL)
    dest = tmp_path / "m.onnx"
    dest.write_bytes(b"previous model")

    with pytest.raises(FetchError):
        fetch(f"s3://{bucket}/model.onnx", dest, sha256="1" * 64)

    assert dest.read_bytes() == b"previous model"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.parametrize("suffix", ["/", ""])
def test_fetches_every_object_under_a_prefix(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    suffix: str,
) -> None:
    files = {"model.onnx": MODEL, "tokenizer/vocab.txt": b"[CLS]\n[SEP]\n", "report.json": b"{}"}
    for rel, body in files.items():
        s3.put(bucket, f"artifacts/abc/{rel}", body)
    s3.put(bucket, "artifacts/abcdef/other.onnx", b"not part of abc")

    result = fetch(f"s3://{bucket}/artifacts/abc{suffix}", tmp_path / "model")

    fetched = {
        path.relative_to(result.path).as_posix(): path.read_bytes()
        for path in result.path.rglob("*")
        if path.is_file()
    }
    assert fetched == files
    assert result.files == 3
    assert result.size_bytes == sum(map(len, files.values()))
    listing = "".join(f"{sha(files[rel])}  {rel}\n" for rel in sorted(files))
    assert result.sha256 == sha(listing.encode())


def test_directory_digest_mismatch_leaves_no_directory(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    s3.put(bucket, "artifacts/abc/model.onnx", MODEL)

    with pytest.raises(FetchError, match="digest of the directory listing"):
        fetch(f"s3://{bucket}/artifacts/abc/", tmp_path / "model", sha256="2" * 64)

    assert list(tmp_path.iterdir()) == []


def test_missing_key_is_named(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as caught:
        fetch(f"s3://{bucket}/nope/model.onnx", tmp_path / "m.onnx")

    uri = f"s3://{bucket}/nope/model.onnx"
    assert str(caught.value) == f"{uri}: no such key 'nope/model.onnx' in bucket '{bucket}'"
    assert list(tmp_path.iterdir()) == []


def test_missing_bucket_is_named(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such bucket 'no-such-bucket'"):
        fetch("s3://no-such-bucket/model.onnx", tmp_path / "m.onnx")


def test_unreachable_endpoint_is_named(
    s3: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)

    with pytest.raises(FetchError) as caught:
        fetch("s3://bucket/model.onnx", tmp_path / "m.onnx")

    # The variable is named, not the (internal) address it holds.
    message = "s3://bucket/model.onnx: cannot connect to the S3 endpoint in AWS_ENDPOINT_URL_S3"
    assert str(caught.value) == message

    assert list(tmp_path.iterdir()) == []


def test_upload_round_trips_a_directory_and_stores_digests(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    artifact = tmp_path / "artifact"
    (artifact / "extra").mkdir(parents=True)
    (artifact / "model.onnx").write_bytes(MODEL)
    (artifact / "extra" / "calibration.npz").write_bytes(b"npz")
    (artifact / "report.json").write_text('{"ok": true}')

    upload(artifact, f"s3://{bucket}/artifacts/abc/")

    head = s3.client.head_object(Bucket=bucket, Key="artifacts/abc/model.onnx")
    assert head["Metadata"]["sha256"] == sha(MODEL)
    result = fetch(f"s3://{bucket}/artifacts/abc", tmp_path / "back")
    assert (result.path / "model.onnx").read_bytes() == MODEL
    assert (result.path / "report.json").read_text() == '{"ok": true}'
    assert result.files == 3


def test_upload_writes_the_report_last(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    artifact = tmp_path / "artifact"
    artifact.mkdir()
    for name in ("report.json", "model.onnx", "z-last-alphabetically.bin"):
        (artifact / name).write_bytes(b"x")
    written: list[str] = []
    real_upload_file = storage_s3.upload_file

    def record(uri: str, src: Path, key: str, digest: str, role: str | None) -> None:
        written.append(key)
        real_upload_file(uri, src, key, digest, role)

    monkeypatch.setattr(fetch_module.storage_s3, "upload_file", record)

    upload(artifact, f"s3://{bucket}/a")

    assert written == ["a/model.onnx", "a/z-last-alphabetically.bin", "a/report.json"]


def test_a_corrupted_object_fails_its_stored_digest(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(MODEL)
    upload(src, f"s3://{bucket}/models/")
    s3.client.put_object(
        Bucket=bucket, Key="models/model.onnx", Body=b"bit rot", Metadata={"sha256": sha(MODEL)}
    )

    with pytest.raises(FetchError, match=f"expected {sha(MODEL)}, got {sha(b'bit rot')}"):
        fetch(f"s3://{bucket}/models/model.onnx", tmp_path / "out.onnx")


def test_upload_to_a_missing_bucket_is_named(s3: S3Server, tmp_path: Path) -> None:
    src = tmp_path / "model.onnx"
    src.write_bytes(MODEL)

    with pytest.raises(FetchError, match="s3://no-such-bucket/models/: no such bucket 'no-such-bucket'"):
        upload(src, "s3://no-such-bucket/models/")


def test_exists(s3: S3Server, bucket: str) -> None:
    s3.put(bucket, "artifacts/abc/report.json", b"{}")

    assert exists(f"s3://{bucket}/artifacts/abc/report.json")
    assert exists(f"s3://{bucket}/artifacts/abc")
    assert not exists(f"s3://{bucket}/artifacts/abd/report.json")
    assert not exists(f"s3://{bucket}/artifacts/abd/")
    with pytest.raises(FetchError, match="no such bucket"):
        exists("s3://no-such-bucket/x")


def test_cli_fetches_from_s3_in_a_separate_process(
    s3: S3Server,
    bucket: str,
    tmp_path: Path,
    mserve: Path,
) -> None:
    s3.put(bucket, "model.onnx", MODEL)

    done = subprocess.run(
        [mserve, "fetch", f"s3://{bucket}/model.onnx", tmp_path / "m.onnx", "--sha256", sha(MODEL)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"sha256 {sha(MODEL)}" in done.stdout
    assert (tmp_path / "m.onnx").read_bytes() == MODEL


def test_an_object_over_the_cap_is_refused_before_download(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    s3.put(bucket, "model.onnx", MODEL)
    uri = f"s3://{bucket}/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx", max_bytes=1024)

    assert str(caught.value) == (
        f"{uri}: the source is {len(MODEL)} bytes, more than the size cap of 1024 bytes "
        "(--max-bytes / MSERVE_FETCH_MAX_BYTES)"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_prefix_over_the_cap_in_all_is_refused(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    for name in ("a.bin", "b.bin"):
        s3.put(bucket, f"artifacts/abc/{name}", b"x" * 1000)

    with pytest.raises(FetchError, match="the source is 2000 bytes, more than the size cap of 1500 bytes"):
        fetch(f"s3://{bucket}/artifacts/abc/", tmp_path / "model", max_bytes=1500)

    assert list(tmp_path.iterdir()) == []
