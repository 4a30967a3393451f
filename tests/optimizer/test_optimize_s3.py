"""Source from and artifact to a real S3-compatible server (moto in server mode, on loopback)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, optimize_in_process


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch):  # -> boto3 S3 client
    import boto3

    for name in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    for bucket in ("models", "artifacts"):
        client.create_bucket(Bucket=bucket)
    return client


def test_optimize_from_s3_to_s3_then_cached(s3, digits_mlp: DigitsModel, tmp_path: Path) -> None:
    from mserve_runtime.fetch import fetch

    source = digits_mlp.source("onnx")
    s3.put_object(Bucket="models", Key="digits/model.onnx", Body=source.read_bytes())
    termination = tmp_path / "termination-log"
    args = [
        "s3://models/digits/model.onnx",
        "--output",
        "s3://artifacts/optimized",
        "--quantize",
        "dynamic-int8",
        "--termination-message",
        termination,
    ]
    run = optimize_in_process(*args)
    assert run.exit_code == 0, run.stdout + run.stderr
    summary = json.loads(termination.read_text())
    digest = summary["artifact_digest"]
    assert summary["artifact_uri"] == f"s3://artifacts/optimized/{digest}/model.onnx"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="artifacts")["Contents"])
    assert keys == [f"optimized/{digest}/model.onnx", f"optimized/{digest}/report.json"]
    report = json.loads(
        s3.get_object(Bucket="artifacts", Key=f"optimized/{digest}/report.json")["Body"].read()
    )
    assert report["verdict"] == "passed"
    assert report["source"]["uri"] == "s3://models/digits/model.onnx"

    # The runtime's init step downloads the artifact and checks it against the report.
    landed = fetch(summary["artifact_uri"], tmp_path / "model.onnx", sha256=summary["artifact_sha256"])
    assert hashlib.sha256(landed.path.read_bytes()).hexdigest() == report["artifact"]["sha256"]

    # The operator re-runs the Job with the digest pinned: found, nothing redone.
    pinned = optimize_in_process(*args, "--sha256", hashlib.sha256(source.read_bytes()).hexdigest())
    assert pinned.exit_code == 0
    assert pinned.stdout.splitlines()[-2].startswith("cached: s3://artifacts/optimized/")
    assert pinned.seconds < 1.0, pinned.seconds


def test_missing_bucket_is_a_one_line_error(s3, digits_mlp: DigitsModel) -> None:
    run = optimize_in_process("s3://no-such-bucket/model.onnx", "--output", "s3://artifacts/x")
    assert run.exit_code == 1
    assert "s3://no-such-bucket/model.onnx" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
