"""Upload a local file to an S3-compatible store, creating the bucket if needed.

    python hack/s3-store/upload.py FILE s3://bucket/key --endpoint http://127.0.0.1:9000

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: the store's root keys (hack/up.sh
reads them from the Secret mserve-system/mserve-s3-root), or keys whose policy allows the write.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from urllib.parse import urlparse

import boto3


def upload(path: Path, uri: str, endpoint: str, buckets: list[str]) -> None:
    """Put `path` at `uri`; every bucket in `buckets` (and the target's) exists afterwards."""
    parsed = urlparse(uri)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for bucket in {parsed.netloc, *buckets} - existing:
        client.create_bucket(Bucket=bucket)
    client.upload_file(str(path), parsed.netloc, parsed.path.lstrip("/"))
    size = client.head_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))["ContentLength"]
    print(f"uploaded {path} -> {uri} ({size} bytes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("uri")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", action="append", default=[], help="another bucket to create")
    args = parser.parse_args()
    upload(args.file, args.uri, args.endpoint, args.bucket)


if __name__ == "__main__":
    main()
