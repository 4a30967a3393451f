"""S3 (and S3-compatible: MinIO, moto, Ceph) reads and writes for model storage.

Endpoint, region and credentials come from the standard AWS environment variables, so the
operator configures a pod the way every AWS tool is configured.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mserve_runtime.atomic_write import CHUNK_BYTES
from mserve_runtime.storage_errors import FetchError

SHA256_METADATA_KEY = "sha256"


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Location:
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise FetchError(uri, "no bucket in URI (expected s3://BUCKET/KEY)")
    return S3Location(bucket, key)


def endpoint_url() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


@cache
def _client(endpoint: str | None, region: str, _credentials_env: tuple[str | None, ...]) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        # Path-style works with every S3-compatible server (MinIO, moto, Ceph), where
        # virtual-host style would need DNS per bucket; AWS itself gets botocore's default.
        s3={"addressing_style": "path" if endpoint else "auto"},
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint, region_name=region, config=config)


def s3_client() -> Any:
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    # Clients are cached per endpoint and credentials so that a directory fetch reuses one
    # connection pool, while a changed environment (tests, long-lived optimizer) is honoured.
    credentials_env = tuple(
        os.environ.get(name) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE")
    )
    return _client(endpoint_url(), region, credentials_env)


def _explain(uri: str, exc: Exception, location: S3Location) -> FetchError:
    from botocore.exceptions import (
        ClientError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, EndpointConnectionError):
        return FetchError(uri, f"cannot connect to S3 endpoint {exc.kwargs.get('endpoint_url')}")
    if isinstance(exc, NoCredentialsError):
        return FetchError(uri, "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, ReadTimeoutError):
        return FetchError(uri, f"S3 endpoint {endpoint_url() or 'AWS'} timed out")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return FetchError(uri, f"no such bucket {location.bucket!r}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return FetchError(uri, f"no such key {location.key!r} in bucket {location.bucket!r}")
        if code in ("AccessDenied", "403", "Forbidden"):
            return FetchError(uri, "access denied (HTTP 403): check the credentials and the bucket policy")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return FetchError(uri, f"credentials rejected ({code}): check AWS_ACCESS_KEY_ID/SECRET")
        message = error.get("Message") or exc
        return FetchError(uri, f"S3 error {code} (HTTP {status}): {message}")
    return FetchError(uri, f"S3 error: {exc}")


def _require_bucket(client: Any, uri: str, bucket: str) -> None:
    """A FetchError naming the bucket when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            raise FetchError(uri, f"no such bucket {bucket!r}") from None
        raise


def list_keys(client: Any, location: S3Location, prefix: str, *, limit: int | None = None) -> list[str]:
    """Keys under `prefix`, relative to it; zero-byte "folder" markers left out."""
    keys: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue
            keys.append(item["Key"][len(prefix) :])
            if limit is not None and len(keys) >= limit:
                return keys
    return keys


@dataclass(frozen=True)
class S3Source:
    """What an s3:// URI names: one object, or every object under a prefix."""

    location: S3Location
    # Relative names under `prefix` for a directory; None for a single object.
    files: list[str] | None
    prefix: str
    stored_sha256: str | None = None


def _object_head(client, location: S3Location) -> tuple[dict | None, str]:
    """The object the URI names (its HEAD), or None and the prefix to list as a folder instead."""
    if not location.key or location.key.endswith("/"):
        return None, location.key
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=location.bucket, Key=location.key), ""
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
    return None, location.key + "/"


def resolve(uri: str) -> S3Source:
    location = parse_s3_uri(uri)
    client = s3_client()
    try:
        head, prefix = _object_head(client, location)
        if head is not None:
            stored = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
            return S3Source(location, None, location.key, stored)
        files = list_keys(client, location, prefix)
        if files:
            return S3Source(location, sorted(files), prefix)
        _require_bucket(client, uri, location.bucket)
        what = f"no such key {location.key!r}" if location.key else "no objects"
        raise FetchError(uri, f"{what} in bucket {location.bucket!r}")
    except Exception as exc:
        raise _explain(uri, exc, location) from exc


def object_chunks(uri: str, location: S3Location, key: str) -> Iterator[bytes]:
    try:
        body = s3_client().get_object(Bucket=location.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()
    except Exception as exc:
        raise _explain(uri, exc, S3Location(location.bucket, key)) from exc


def exists(uri: str) -> bool:
    location = parse_s3_uri(uri)
    client = s3_client()
    try:
        head, prefix = _object_head(client, location)
        if head is not None:
            return True
        if list_keys(client, location, prefix, limit=1):
            return True
        _require_bucket(client, uri, location.bucket)
        return False
    except Exception as exc:
        raise _explain(uri, exc, location) from exc


def upload_file(uri: str, src: Path, key: str, sha256: str) -> None:
    location = parse_s3_uri(uri)
    try:
        # upload_file switches to multipart for large files; S3 shows a multipart object
        # only once it is complete, so a reader never sees a partial model.
        s3_client().upload_file(
            str(src), location.bucket, key, ExtraArgs={"Metadata": {SHA256_METADATA_KEY: sha256}}
        )
    except Exception as exc:
        # boto3's transfer manager wraps the ClientError in S3UploadFailedError; explain the original.
        cause = exc.__cause__ or exc.__context__
        raise _explain(uri, cause if isinstance(cause, Exception) else exc, location) from exc
