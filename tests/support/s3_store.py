"""A real S3-compatible server on loopback (moto in server mode), as fixtures for any tier."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class S3Server:
    endpoint: str
    client: object  # a boto3 S3 client

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)


# What a process may carry that would change which store, or which keys, a request goes with.
STORAGE_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "MSERVE_FETCH_MAX_BYTES",
)


def clear_storage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No storage settings from the machine the tests run on, for any role."""
    for name in STORAGE_ENV:
        for prefix in ("", "MSERVE_SOURCE_", "MSERVE_STORE_"):
            monkeypatch.delenv(prefix + name, raising=False)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The S3 server, with the AWS environment pointing at it, as a pod would have it."""
    import boto3

    clear_storage_env(monkeypatch)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    return S3Server(moto_endpoint, client)
