"""Source from and artifact to a real S3-compatible server (moto in server mode, on loopback)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, optimize_in_process

from tests.support.s3_store import S3Server


@pytest.fixture
def buckets(s3: S3Server) -> S3Server:
    for bucket in ("models", "artifacts"):
        s3.client.create_bucket(Bucket=bucket)
    return s3


def test_optimize_from_s3_to_s3_then_cached(
    buckets: S3Server, digits_mlp: DigitsModel, tmp_path: Path
) -> None:
    from mserve_runtime.fetch import fetch

    source = digits_mlp.source("onnx")
    buckets.put("models", "digits/model.onnx", source.read_bytes())
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
    keys = sorted(o["Key"] for o in buckets.client.list_objects_v2(Bucket="artifacts")["Contents"])
    assert keys == [f"optimized/{digest}/model.onnx", f"optimized/{digest}/report.json"]
    report = json.loads(
        buckets.client.get_object(Bucket="artifacts", Key=f"optimized/{digest}/report.json")["Body"].read()
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


def test_missing_bucket_is_a_one_line_error(buckets: S3Server, digits_mlp: DigitsModel) -> None:
    run = optimize_in_process("s3://no-such-bucket/model.onnx", "--output", "s3://artifacts/x")
    assert run.exit_code == 1
    assert "s3://no-such-bucket/model.onnx" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
