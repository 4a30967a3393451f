"""S3 (and S3-compatible: MinIO, moto, Ceph) reads and writes for model storage.

Endpoint, region and credentials come from one role's environment (`storage_roles`), or,
without a role, from the standard AWS environment variables as every AWS tool reads them.
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
from mserve_runtime.storage_roles import Role, S3Access, s3_access

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


@cache
def _client(access: S3Access) -> Any:
    import boto3
    import botocore.session
    from botocore import UNSIGNED
    from botocore.config import Config

    options: dict[str, Any] = {
        # Path-style works with every S3-compatible server (MinIO, moto, Ceph), where
        # virtual-host style would need DNS per bucket; AWS itself gets botocore's default.
        "s3": {"addressing_style": "path" if access.endpoint else "auto"},
        "connect_timeout": 5,
        "read_timeout": 60,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    if access.role is None:
        session = boto3.session.Session()
    else:
        # A role's client sees none of the process's AWS configuration: not AWS_PROFILE, not
        # the config files, not AWS_ENDPOINT_URL; only what `s3_access` read for the role.
        isolated = botocore.session.Session(session_vars={"profile": (None, None, None, None)})
        isolated.set_config_variable("config_file", os.devnull)
        isolated.set_config_variable("credentials_file", os.devnull)
        session = boto3.session.Session(botocore_session=isolated)
        options["ignore_configured_endpoint_urls"] = True
        if access.access_key_id is None:
            options["signature_version"] = UNSIGNED  # no keys for this role: anonymous, never borrowed
    return session.client(
        "s3",
        endpoint_url=access.endpoint,
        region_name=access.region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        aws_session_token=access.session_token,
        config=Config(**options),
    )


def s3_client(uri: str, role: Role | None = None) -> tuple[Any, S3Access]:
    """The client for `role`, one per role and configuration: roles never share one."""
    access = s3_access(uri, role)
    try:
        return _client(access), access
    except ValueError as exc:  # botocore's "Invalid endpoint" carries the value
        raise FetchError(uri, f"invalid S3 endpoint in {access.endpoint_from}") from exc


def _explain(uri: str, exc: Exception, location: S3Location, access: S3Access) -> FetchError:
    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    # botocore's own messages carry the endpoint URL; the endpoint is named by the variable
    # that set it, so an error never shows a user an internal address.
    endpoint = f"the S3 endpoint in {access.endpoint_from}" if access.endpoint_from else "AWS S3"
    keys = f"{access.env_name('AWS_ACCESS_KEY_ID')}/{access.env_name('AWS_SECRET_ACCESS_KEY')}"
    if isinstance(exc, FetchError):
        return exc
    if isinstance(exc, EndpointConnectionError):
        return FetchError(uri, f"cannot connect to {endpoint}")
    if isinstance(exc, ConnectTimeoutError | ReadTimeoutError):
        return FetchError(uri, f"{endpoint} timed out")
    if isinstance(exc, NoCredentialsError):
        return FetchError(uri, f"no S3 credentials: set {keys}")
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return FetchError(uri, f"no such bucket {location.bucket!r}")
        if code in ("NoSuchKey", "404", "NotFound"):
            return FetchError(uri, f"no such key {location.key!r} in bucket {location.bucket!r}")
        if code in ("AccessDenied", "403", "Forbidden"):
            if access.role is not None and access.access_key_id is None:
                return FetchError(uri, f"access denied (HTTP 403) to an anonymous request: no {keys} set")
            # A HEAD's 403 has no body: a wrong secret and a policy's "no" look the same.
            return FetchError(uri, f"access denied (HTTP 403) with the keys in {keys}")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return FetchError(uri, f"credentials rejected ({code}): check {keys}")
        return FetchError(uri, f"S3 error {code or 'without a code'} (HTTP {status})")
    if isinstance(exc, BotoCoreError):
        return FetchError(uri, f"S3 request to {endpoint} failed ({type(exc).__name__})")
    return FetchError(uri, f"S3 request failed ({type(exc).__name__})")


def _require_bucket(client: Any, uri: str, bucket: str) -> None:
    """A FetchError naming the bucket when it does not exist."""
    from botocore.exceptions import ClientError

    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            raise FetchError(uri, f"no such bucket {bucket!r}") from None
        raise


def list_objects(
    client: Any, location: S3Location, prefix: str, *, limit: int | None = None
) -> list[tuple[str, int]]:
    """(key relative to `prefix`, size) of the objects under it; zero-byte "folder" markers left out."""
    found: list[tuple[str, int]] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=location.bucket, Prefix=prefix)
    for page in pages:
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue
            found.append((item["Key"][len(prefix) :], int(item.get("Size", 0))))
            if limit is not None and len(found) >= limit:
                return found
    return found


@dataclass(frozen=True)
class S3Source:
    """What an s3:// URI names: one object, or every object under a prefix."""

    location: S3Location
    # Relative names under `prefix` for a directory; None for a single object.
    files: list[str] | None
    prefix: str
    size_bytes: int
    stored_sha256: str | None = None


def _object_head(client: Any, location: S3Location) -> tuple[dict | None, str]:
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


def resolve(uri: str, role: Role | None = None) -> S3Source:
    location = parse_s3_uri(uri)
    client, access = s3_client(uri, role)
    try:
        head, prefix = _object_head(client, location)
        if head is not None:
            stored = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
            return S3Source(location, None, location.key, int(head.get("ContentLength", 0)), stored)
        found = sorted(list_objects(client, location, prefix))
        if found:
            return S3Source(location, [rel for rel, _ in found], prefix, sum(size for _, size in found))
        _require_bucket(client, uri, location.bucket)
        what = f"no such key {location.key!r}" if location.key else "no objects"
        raise FetchError(uri, f"{what} in bucket {location.bucket!r}")
    except Exception as exc:
        raise _explain(uri, exc, location, access) from exc


def object_chunks(uri: str, location: S3Location, key: str, role: Role | None = None) -> Iterator[bytes]:
    client, access = s3_client(uri, role)
    try:
        body = client.get_object(Bucket=location.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(CHUNK_BYTES)
        finally:
            body.close()
    except Exception as exc:
        raise _explain(uri, exc, S3Location(location.bucket, key), access) from exc


def exists(uri: str, role: Role | None = None) -> bool:
    location = parse_s3_uri(uri)
    client, access = s3_client(uri, role)
    try:
        head, prefix = _object_head(client, location)
        if head is not None:
            return True
        if list_objects(client, location, prefix, limit=1):
            return True
        _require_bucket(client, uri, location.bucket)
        return False
    except Exception as exc:
        raise _explain(uri, exc, location, access) from exc


def upload_file(uri: str, src: Path, key: str, sha256: str, role: Role | None = None) -> None:
    location = parse_s3_uri(uri)
    client, access = s3_client(uri, role)
    try:
        # upload_file switches to multipart for large files; S3 shows a multipart object
        # only once it is complete, so a reader never sees a partial model.
        metadata = {"Metadata": {SHA256_METADATA_KEY: sha256}}
        client.upload_file(str(src), location.bucket, key, ExtraArgs=metadata)
    except Exception as exc:
        # boto3's transfer manager wraps the ClientError in S3UploadFailedError; explain the original.
        cause = exc.__cause__ or exc.__context__
        raise _explain(uri, cause if isinstance(cause, Exception) else exc, location, access) from exc
