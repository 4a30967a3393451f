"""Source and store credentials kept apart, against an S3 server that tells key pairs apart.

The store here checks every signature and judges it by the key's own policy (moto with IAM
enforcement on, see `iam_s3_server`): the source's keys reach only the source bucket, the
store's keys only `artifacts/tenant-a/`. The process also holds an admin key pair in the
plain AWS_* variables, as a careless pod might: with a role, it must never be used.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mserve_runtime.fetch import FetchError, exists, fetch, upload

from tests.support.iam_s3_server import IamS3Server, KeyPair
from tests.support.ports import free_port
from tests.support.s3_store import clear_storage_env

MODEL = b"tenant-a model bytes" * 1000
ARTIFACT = b"optimized artifact" * 1000
OTHER_TENANT = b"tenant-b's artifact"


@dataclass
class Store:
    server: IamS3Server
    source_keys: KeyPair
    store_keys: KeyPair

    @property
    def endpoint(self) -> str:
        return self.server.endpoint


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    server = IamS3Server()
    admin = server.client("s3")
    for bucket in ("models", "artifacts"):
        admin.create_bucket(Bucket=bucket)
    admin.put_object(Bucket="models", Key="digits/model.onnx", Body=MODEL)
    admin.put_object(Bucket="artifacts", Key="tenant-a/abc/model.onnx", Body=ARTIFACT)
    admin.put_object(Bucket="artifacts", Key="tenant-b/def/model.onnx", Body=OTHER_TENANT)
    source_keys = server.add_prefix_user("source", "models")
    store_keys = server.add_prefix_user("store-tenant-a", "artifacts", "tenant-a/")
    server.enforce()
    yield Store(server, source_keys, store_keys)
    server.stop()


@pytest.fixture
def pod_env(store: Store, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the operator gives a pod: each role's Secret under its prefix."""
    env = {
        **store.source_keys.env("MSERVE_SOURCE_"),
        "MSERVE_SOURCE_AWS_ENDPOINT_URL": store.endpoint,
        **store.store_keys.env("MSERVE_STORE_"),
        "MSERVE_STORE_AWS_ENDPOINT_URL": store.endpoint,
        # Bait: plain AWS_* with keys that may do anything, and an endpoint that answers nothing.
        **store.server.admin.env(""),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
    }
    clear_storage_env(monkeypatch)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_each_role_reads_what_its_own_keys_allow(pod_env: dict[str, str], tmp_path: Path) -> None:
    source = fetch("s3://models/digits/model.onnx", tmp_path / "source.onnx", role="source")
    artifact = fetch("s3://artifacts/tenant-a/abc/model.onnx", tmp_path / "model.onnx", role="store")

    assert source.path.read_bytes() == MODEL
    assert artifact.path.read_bytes() == ARTIFACT


def test_the_source_role_cannot_read_the_store(pod_env: dict[str, str], tmp_path: Path) -> None:
    # The attack: a ModelService whose source is another tenant's artifact.
    uri = "s3://artifacts/tenant-b/def/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "stolen.onnx", role="source")

    assert str(caught.value) == (
        f"{uri}: access denied (HTTP 403) with the keys in "
        "MSERVE_SOURCE_AWS_ACCESS_KEY_ID/MSERVE_SOURCE_AWS_SECRET_ACCESS_KEY"
    )
    assert list(tmp_path.iterdir()) == []


def test_the_store_role_reaches_its_own_prefix_only(pod_env: dict[str, str], tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"access denied .* MSERVE_STORE_AWS_ACCESS_KEY_ID"):
        fetch("s3://artifacts/tenant-b/def/model.onnx", tmp_path / "m.onnx", role="store")
    with pytest.raises(FetchError, match="access denied"):
        fetch("s3://models/digits/model.onnx", tmp_path / "m.onnx", role="store")
    (tmp_path / "mine.onnx").write_bytes(ARTIFACT)
    with pytest.raises(FetchError, match="access denied"):
        upload(tmp_path / "mine.onnx", "s3://artifacts/tenant-b/def/model.onnx", role="store")

    upload(tmp_path / "mine.onnx", "s3://artifacts/tenant-a/new/model.onnx", role="store")
    assert exists("s3://artifacts/tenant-a/new/model.onnx", role="store")
    assert not exists("s3://artifacts/tenant-a/none/model.onnx", role="store")


def test_a_role_without_keys_is_anonymous_never_the_plain_aws_keys(
    pod_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No credentialsSecret on the source: the admin keys in AWS_* would read anything.
    monkeypatch.delenv("MSERVE_SOURCE_AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("MSERVE_SOURCE_AWS_SECRET_ACCESS_KEY")

    with pytest.raises(FetchError) as caught:
        fetch("s3://models/digits/model.onnx", tmp_path / "m.onnx", role="source")

    assert "access denied (HTTP 403) to an anonymous request: no MSERVE_SOURCE_AWS_ACCESS_KEY_ID" in str(
        caught.value
    )


def test_the_plain_aws_environment_serves_local_use_without_a_role(
    pod_env: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(FetchError, match=r"cannot connect to the S3 endpoint in AWS_ENDPOINT_URL$"):
        fetch("s3://models/digits/model.onnx", tmp_path / "m.onnx")


def test_each_role_has_its_own_endpoint(
    pod_env: dict[str, str], moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    # The source on another S3 server (moto without enforcement), the store where it was.
    other = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    other.create_bucket(Bucket="elsewhere")
    other.put_object(Bucket="elsewhere", Key="model.onnx", Body=b"from the other endpoint")
    monkeypatch.setenv("MSERVE_SOURCE_AWS_ENDPOINT_URL", moto_endpoint)

    source = fetch("s3://elsewhere/model.onnx", tmp_path / "a.onnx", role="source")
    artifact = fetch("s3://artifacts/tenant-a/abc/model.onnx", tmp_path / "b.onnx", role="store")

    assert source.path.read_bytes() == b"from the other endpoint"
    assert artifact.path.read_bytes() == ARTIFACT


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"MSERVE_STORE_AWS_SECRET_ACCESS_KEY": "wrong"},
            # A HEAD's 403 carries no error code: a wrong secret reads as "denied".
            "access denied (HTTP 403) with the keys in "
            "MSERVE_STORE_AWS_ACCESS_KEY_ID/MSERVE_STORE_AWS_SECRET_ACCESS_KEY",
        ),
        (
            {"MSERVE_STORE_AWS_SECRET_ACCESS_KEY": None},
            "MSERVE_STORE_AWS_ACCESS_KEY_ID and MSERVE_STORE_AWS_SECRET_ACCESS_KEY must be set together",
        ),
        (
            {
                "MSERVE_STORE_AWS_ACCESS_KEY_ID": None,
                "MSERVE_STORE_AWS_SECRET_ACCESS_KEY": None,
                "MSERVE_STORE_AWS_SESSION_TOKEN": "t",
            },
            "MSERVE_STORE_AWS_ACCESS_KEY_ID and MSERVE_STORE_AWS_SECRET_ACCESS_KEY must be set together",
        ),
        (
            {"MSERVE_STORE_AWS_ENDPOINT_URL": "ftp://10.0.0.7:21"},
            "MSERVE_STORE_AWS_ENDPOINT_URL must be an http:// or https:// URL",
        ),
    ],
)
def test_careless_store_settings_get_a_clear_error(
    pod_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str | None],
    message: str,
) -> None:
    for name, value in change.items():
        if value is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, value)
    uri = "s3://artifacts/tenant-a/abc/model.onnx"

    with pytest.raises(FetchError) as caught:
        fetch(uri, tmp_path / "m.onnx", role="store")

    assert str(caught.value).startswith(f"{uri}: {message}")
    assert "10.0.0.7" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_fetches_with_a_role_in_its_own_process(
    pod_env: dict[str, str], store: Store, tmp_path: Path, mserve: Path
) -> None:
    digest = hashlib.sha256(ARTIFACT).hexdigest()
    command = [
        mserve,
        "fetch",
        "s3://artifacts/tenant-a/abc/model.onnx",
        tmp_path / "m.onnx",
        "--sha256",
        digest,
    ]

    as_store = subprocess.run(
        [*command, "--role", "store"], capture_output=True, text=True, timeout=60, check=False
    )
    as_source = subprocess.run(
        [*command, "--role", "source"], capture_output=True, text=True, timeout=60, check=False
    )

    assert as_store.returncode == 0, as_store.stderr
    assert (tmp_path / "m.onnx").read_bytes() == ARTIFACT
    assert as_source.returncode == 1
    assert "access denied (HTTP 403) with the keys in MSERVE_SOURCE_AWS_ACCESS_KEY_ID" in as_source.stderr
    assert store.endpoint.rsplit(":", 1)[1] not in as_source.stderr


def test_roles_use_separate_clients(pod_env: dict[str, str]) -> None:
    from mserve_runtime import storage_s3

    source_client, source = storage_s3.s3_client("s3://models/x", "source")
    store_client, store_access = storage_s3.s3_client("s3://artifacts/x", "store")

    assert source_client is not store_client
    assert (source.role, store_access.role) == ("source", "store")
    assert source.access_key_id != store_access.access_key_id
