"""Give a namespace its own artifact-store keys, scoped to its own prefix (MinIO users and policies).

    hack/store-tenant.py NAMESPACE --endpoint http://127.0.0.1:9000 [--read s3://models/shared/]
    hack/store-tenant.py NAMESPACE --endpoint http://127.0.0.1:9000 --delete
    hack/store-tenant.py NAMESPACE --print-policy      (the IAM policy, for any S3 store; changes nothing)

Makes (or updates) in MinIO the user and the policy `<namespace>.<secret>`: read and write under
`<store>/<namespace>/` (listing only below that prefix), read-only under each --read URI, nothing
else; then writes the Secret <secret> (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) into that
namespace. Run again, it keeps the keys that Secret holds (--rotate makes new ones). The store's
root credentials come from MINIO_ROOT_USER / MINIO_ROOT_PASSWORD, else from --root-secret.
The admin API is spoken by the `minio` package's MinioAdmin (SigV4 over HTTP, no `mc`).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import sys
from dataclasses import dataclass
from urllib.parse import urlparse

import urllib3
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException
from minio import Minio, MinioAdmin
from minio.credentials import StaticProvider
from minio.error import MinioAdminException, S3Error
from mserve_runtime.storage_s3 import S3Location

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SECRET_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
WRITE_ACTIONS = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
]
READ_ACTIONS = ["s3:GetObject"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "mserve-store-tenant"}


class TenantError(ValueError):
    """A value the admin gave that cannot work; the message names it."""


def parse_prefix(uri: str, what: str) -> S3Location:
    """s3://bucket[/folder/] -> that folder: its key is empty (the whole bucket) or ends with '/';
    a key without a trailing '/' is taken as a folder."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not BUCKET.match(parsed.netloc or ""):
        raise TenantError(f"{what} {uri!r} is not s3://<bucket>/[prefix/] with a valid bucket name")
    key = parsed.path.lstrip("/")
    if key and not key.endswith("/"):
        key += "/"
    if any(part in ("", ".", "..") for part in key.split("/")[:-1]) or "*" in key or "?" in key:
        raise TenantError(f"{what} {uri!r}: empty, '.', '..' or wildcard path segments are not allowed")
    return S3Location(parsed.netloc, key)


def check_namespace(namespace: str) -> str:
    if not DNS_LABEL.match(namespace):
        raise TenantError(f"namespace {namespace!r} is not a Kubernetes namespace name (a DNS label)")
    return namespace


def identity(namespace: str, secret: str) -> str:
    """One MinIO user and policy per (namespace, Secret); '.' never occurs in a namespace name."""
    return f"{namespace}.{secret}"


def tenant_policy(writes: list[S3Location], reads: list[S3Location]) -> dict:
    """An IAM policy: objects under `writes` read/write, under `reads` read-only, listing only
    below those prefixes (never the bucket root, unless a whole bucket is granted)."""
    statements: list[dict] = []
    buckets = sorted({p.bucket for p in writes + reads})
    # HeadBucket tells a missing bucket from a denied one; it lists nothing.
    statements.append(
        {
            "Effect": "Allow",
            "Action": ["s3:GetBucketLocation", "s3:HeadBucket"],
            "Resource": [f"arn:aws:s3:::{b}" for b in buckets],
        }
    )
    for prefixes, actions in ((writes, WRITE_ACTIONS), (reads, READ_ACTIONS)):
        for p in prefixes:
            listing: dict = {
                "Effect": "Allow",
                "Action": ["s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{p.bucket}"],
            }
            if p.key:
                listing["Condition"] = {"StringLike": {"s3:prefix": [f"{p.key}*"]}}
            statements.append(listing)
            statements.append(
                {
                    "Effect": "Allow",
                    "Action": list(actions),
                    "Resource": [f"arn:aws:s3:::{p.bucket}/{p.key}*"],
                }
            )
    return {"Version": "2012-10-17", "Statement": statements}


@dataclass(frozen=True)
class Store:
    admin: MinioAdmin
    s3: Minio


def check_endpoint(endpoint: str) -> str:
    parsed = urlparse(endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
        raise TenantError(f"--endpoint {endpoint!r} is not an http(s)://host:port URL")
    return endpoint


def connect(endpoint: str, root_user: str, root_password: str) -> Store:
    parsed = urlparse(check_endpoint(endpoint))
    secure = parsed.scheme == "https"
    provider = StaticProvider(root_user, root_password)
    return Store(
        admin=MinioAdmin(endpoint=parsed.netloc, credentials=provider, secure=secure),
        s3=Minio(parsed.netloc, access_key=root_user, secret_key=root_password, secure=secure),
    )


def core_api():
    from kubernetes import client, config

    config.load_kube_config()
    return client.CoreV1Api()


def read_secret(api, namespace: str, name: str) -> dict[str, str] | None:
    try:
        secret = api.read_namespaced_secret(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}


def root_credentials(api, root_secret: str) -> tuple[str, str]:
    user, password = os.environ.get("MINIO_ROOT_USER"), os.environ.get("MINIO_ROOT_PASSWORD")
    if user and password:
        return user, password
    namespace, _, name = root_secret.partition("/")
    data = read_secret(api, namespace, name)
    if not data or not {"MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"} <= data.keys():
        raise TenantError(
            f"--root-secret {root_secret}: no Secret with MINIO_ROOT_USER and MINIO_ROOT_PASSWORD"
        )
    return data["MINIO_ROOT_USER"], data["MINIO_ROOT_PASSWORD"]


def write_secret(api, namespace: str, name: str, keys: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": namespace, "labels": MANAGED_BY},
        "stringData": keys,
    }
    if read_secret(api, namespace, name) is None:
        api.create_namespaced_secret(namespace, body)
    else:
        api.replace_namespaced_secret(name, namespace, body)


def grant(
    store: Store,
    api,
    namespace: str,
    secret: str,
    writes: list[S3Location],
    reads: list[S3Location],
    rotate: bool,
) -> str:
    """Create or update the namespace's user and policy and its Secret; returns the access key."""
    name = identity(namespace, secret)
    for bucket in sorted({p.bucket for p in writes}):
        if not store.s3.bucket_exists(bucket):
            store.s3.make_bucket(bucket)
    existing = read_secret(api, namespace, secret) or {}
    secret_key = existing.get("AWS_SECRET_ACCESS_KEY", "")
    if rotate or existing.get("AWS_ACCESS_KEY_ID") != name or len(secret_key) < 32:
        secret_key = secrets.token_hex(20)
    store.admin.policy_add(name, policy=tenant_policy(writes, reads))
    store.admin.user_add(name, secret_key)
    store.admin.policy_set(name, user=name)
    write_secret(api, namespace, secret, {"AWS_ACCESS_KEY_ID": name, "AWS_SECRET_ACCESS_KEY": secret_key})
    return name


def revoke(store: Store, api, namespace: str, secret: str) -> None:
    """Remove the user, its policy and the Secret; each may already be gone."""
    name = identity(namespace, secret)
    for remove in (lambda: store.admin.user_remove(name), lambda: store.admin.policy_remove(name)):
        try:
            remove()
        except MinioAdminException as exc:
            if int(exc._code) != 404:  # the package keeps the HTTP status only here
                raise
    try:
        api.delete_namespaced_secret(secret, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("namespace")
    endpoint = os.environ.get("MSERVE_STORE_ENDPOINT", "")
    parser.add_argument(
        "--endpoint", default=endpoint, help="the store's URL from here ($MSERVE_STORE_ENDPOINT)"
    )
    parser.add_argument("--store", default="s3://mserve-artifacts/", help="the install's artifact store URI")
    parser.add_argument("--secret", default="mserve-store", help="the Secret written into the namespace")
    parser.add_argument(
        "--read", action="append", default=[], metavar="URI", help="also readable (s3://b/p/)"
    )
    parser.add_argument("--read-only", action="store_true", help="no write access to <store>/<namespace>/")
    parser.add_argument("--rotate", action="store_true", help="new keys even if the Secret holds some")
    parser.add_argument("--delete", action="store_true", help="remove the user, its policy and the Secret")
    parser.add_argument(
        "--print-policy", action="store_true", help="print the IAM policy JSON; change nothing"
    )
    parser.add_argument("--root-secret", default="mserve-system/mserve-s3-root", metavar="NAMESPACE/NAME")
    args = parser.parse_args(argv)
    try:
        namespace = check_namespace(args.namespace)
        if not SECRET_NAME.match(args.secret):
            raise TenantError(f"--secret {args.secret!r} is not a Kubernetes Secret name")
        store_prefix = parse_prefix(args.store, "--store")
        own = S3Location(store_prefix.bucket, f"{store_prefix.key}{namespace}/")
        writes = [] if args.read_only else [own]
        reads = [parse_prefix(uri, "--read") for uri in args.read]
        if not writes and not reads:
            raise TenantError("--read-only with no --read grants nothing")
        if args.print_policy:
            print(json.dumps(tenant_policy(writes, reads), indent=2))
            return 0
        if not args.endpoint:
            raise TenantError("--endpoint (or $MSERVE_STORE_ENDPOINT) is required")
        check_endpoint(args.endpoint)
        api = core_api()
        store = connect(args.endpoint, *root_credentials(api, args.root_secret))
        if args.delete:
            revoke(store, api, namespace, args.secret)
            print(f"removed {identity(namespace, args.secret)} and Secret {namespace}/{args.secret}")
            return 0
        name = grant(store, api, namespace, args.secret, writes, reads, args.rotate)
    except TenantError as exc:
        print(f"store-tenant: {exc}", file=sys.stderr)
        return 2
    except (MinioAdminException, S3Error) as exc:
        print(f"store-tenant: the store refused: {exc}", file=sys.stderr)
        return 1
    except (ApiException, ConfigException) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(
            f"store-tenant: the cluster refused: {reason} {getattr(exc, 'body', '') or ''}", file=sys.stderr
        )
        return 1
    except (OSError, urllib3.exceptions.HTTPError) as exc:
        print(f"store-tenant: cannot reach {args.endpoint or 'the cluster'}: {exc}", file=sys.stderr)
        return 1
    scopes = [f"rw {p.uri}" for p in writes] + [f"ro {p.uri}" for p in reads]
    print(f"{name}: {', '.join(scopes)} -> Secret {namespace}/{args.secret}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
