"""Source from and artifact to real S3-compatible servers on loopback, each role with its own keys.

The optimizer reads its source with the source role (MSERVE_SOURCE_*) and reads and writes
the artifact store with the store role (MSERVE_STORE_*). The first tests need only an S3
API (moto); the tenancy tests run against a server that enforces each key's policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from optimizer_harness import DigitsModel, optimize_in_process

from tests.support.iam_s3_server import IamS3Server
from tests.support.s3_store import S3Server, clear_storage_env


@pytest.fixture
def buckets(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server with each role's keys as the optimizer Job gets them, and nothing in AWS_*."""
    clear_storage_env(monkeypatch)
    for prefix in ("MSERVE_SOURCE_", "MSERVE_STORE_"):
        monkeypatch.setenv(f"{prefix}AWS_ENDPOINT_URL", s3.endpoint)
        monkeypatch.setenv(f"{prefix}AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv(f"{prefix}AWS_SECRET_ACCESS_KEY", "testing")
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
    landed = fetch(
        summary["artifact_uri"], tmp_path / "model.onnx", sha256=summary["artifact_sha256"], role="store"
    )
    assert hashlib.sha256(landed.path.read_bytes()).hexdigest() == report["artifact"]["sha256"]

    # The operator re-runs the Job with the digest pinned: found, nothing redone.
    pinned = optimize_in_process(*args, "--sha256", hashlib.sha256(source.read_bytes()).hexdigest())
    assert pinned.exit_code == 0
    assert pinned.stdout.splitlines()[-2].startswith("cached: s3://artifacts/optimized/")
    assert pinned.seconds < 1.0, pinned.seconds


def test_a_planted_report_on_s3_is_no_cache_hit(buckets: S3Server, digits_mlp: DigitsModel) -> None:
    source = digits_mlp.source("onnx")
    s3 = buckets.client
    s3.put_object(Bucket="models", Key="digits/model.onnx", Body=source.read_bytes())
    args = ["s3://models/digits/model.onnx", "--output", "s3://artifacts/planted"]
    first = optimize_in_process(*args)
    assert first.exit_code == 0, first.stderr
    digest = first.stdout.splitlines()[-2].split("/planted/", 1)[1].split("/", 1)[0]
    # Someone with write access swaps the model, keeping the report (and even its metadata digest).
    real = s3.head_object(Bucket="artifacts", Key=f"planted/{digest}/model.onnx")["Metadata"]
    s3.put_object(
        Bucket="artifacts", Key=f"planted/{digest}/model.onnx", Body=b"not the optimized model", Metadata=real
    )

    again = optimize_in_process(*args, "--sha256", hashlib.sha256(source.read_bytes()).hexdigest())

    assert again.exit_code == 0, again.stderr
    assert (
        f"cache: not trusting s3://artifacts/planted/{digest}/report.json: its artifact does not check out"
        in (again.stdout)
    )
    assert again.stdout.splitlines()[-2].startswith("passed:")
    restored = s3.get_object(Bucket="artifacts", Key=f"planted/{digest}/model.onnx")["Body"].read()
    assert (
        hashlib.sha256(restored).hexdigest()
        == json.loads(s3.get_object(Bucket="artifacts", Key=f"planted/{digest}/report.json")["Body"].read())[
            "artifact"
        ]["sha256"]
    )


def test_missing_bucket_is_a_one_line_error(buckets: S3Server, digits_mlp: DigitsModel) -> None:
    run = optimize_in_process("s3://no-such-bucket/model.onnx", "--output", "s3://artifacts/x")
    assert run.exit_code == 1
    assert "s3://no-such-bucket/model.onnx" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def tenants(digits_mlp: DigitsModel) -> Iterator[dict]:
    """One enforcing store: tenant A's source keys, tenant A's store keys (its prefix only)."""
    server = IamS3Server()
    admin = server.client("s3")
    for bucket in ("team-a-models", "artifacts"):
        admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket="team-a-models", Key="digits.onnx", Body=digits_mlp.source("onnx").read_bytes())
    admin.put_object(Bucket="artifacts", Key="team-b/digits/abc/model.onnx", Body=b"team b's model")
    keys = {
        "source": server.add_prefix_user("team-a-source", "team-a-models"),
        "store": server.add_prefix_user("team-a-store", "artifacts", "team-a/"),
    }
    server.enforce()
    yield {"server": server, "keys": keys}
    server.stop()


@pytest.fixture
def team_a_job_env(tenants: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer Job's environment for team A, with the admin's keys as bait in AWS_*."""
    clear_storage_env(monkeypatch)
    server = tenants["server"]
    env = {
        **tenants["keys"]["source"].env("MSERVE_SOURCE_"),
        "MSERVE_SOURCE_AWS_ENDPOINT_URL": server.endpoint,
        **tenants["keys"]["store"].env("MSERVE_STORE_"),
        "MSERVE_STORE_AWS_ENDPOINT_URL": server.endpoint,
        **server.admin.env(""),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def test_each_role_uses_its_own_keys_on_an_enforcing_store(team_a_job_env: None, tenants: dict) -> None:
    run = optimize_in_process("s3://team-a-models/digits.onnx", "--output", "s3://artifacts/team-a/digits")

    assert run.exit_code == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-2].startswith("passed: s3://artifacts/team-a/digits/")


def test_a_source_naming_another_tenants_artifact_is_refused(team_a_job_env: None, tenants: dict) -> None:
    # The attack: no credentialsSecret of its own, the source names team B's artifact.
    stolen = "s3://artifacts/team-b/digits/abc/model.onnx"

    run = optimize_in_process(stolen, "--output", "s3://artifacts/team-a/stolen")

    assert run.exit_code == 1
    assert run.stderr == (
        f"error: {stolen}: access denied (HTTP 403) with the keys in "
        "MSERVE_SOURCE_AWS_ACCESS_KEY_ID/MSERVE_SOURCE_AWS_SECRET_ACCESS_KEY\n"
    )


def test_an_output_under_another_tenants_prefix_is_refused(team_a_job_env: None, tenants: dict) -> None:
    run = optimize_in_process("s3://team-a-models/digits.onnx", "--output", "s3://artifacts/team-b/digits")

    assert run.exit_code == 1
    assert "access denied (HTTP 403) with the keys in MSERVE_STORE_AWS_ACCESS_KEY_ID" in run.stderr
    admin = tenants["server"].client("s3")
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket="artifacts", Prefix="team-b/")["Contents"]]
    assert keys == ["team-b/digits/abc/model.onnx"]
