"""An S3 server that checks every request's signature and judges it by the key's IAM policy.

moto accepts any key by default. Switched to enforcing (its `/moto-api/reset-auth`), it
verifies each SigV4 signature against the secret of an IAM access key it issued and allows
an action only when that user's policy allows it on the bucket or object ARN, so per-prefix
policies (`arn:aws:s3:::artifacts/tenant-a/*`) hold. It runs in its own process on loopback,
so that switching enforcement on touches no other test's server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.support.polling import wait_until
from tests.support.ports import free_port

REGION = "us-east-1"


@dataclass(frozen=True)
class KeyPair:
    access_key_id: str
    secret_access_key: str

    def env(self, prefix: str) -> dict[str, str]:
        """The variables a pod gets from a Secret holding this pair, under `prefix`."""
        return {
            f"{prefix}AWS_ACCESS_KEY_ID": self.access_key_id,
            f"{prefix}AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }


class IamS3Server:
    """moto in server mode; `add_user` while open, then `enforce()` for the test to run against."""

    def __init__(self) -> None:
        self.endpoint = f"http://127.0.0.1:{free_port()}"
        port = self.endpoint.rsplit(":", 1)[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(f"moto server on {self.endpoint}", self._answers, timeout=30, interval=0.1)
        except BaseException:
            self.stop()
            raise
        # Any key works until enforcement is on; the admin's own key works after it too.
        self.admin = KeyPair("setup", "setup")
        self.admin = self.add_user("admin", [{"Effect": "Allow", "Action": "*", "Resource": "*"}])

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"moto server on {self.endpoint} exited ({self.process.returncode})")
        try:
            urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1).close()
        except OSError:
            return False
        return True

    def client(self, service: str, keys: KeyPair | None = None) -> Any:
        import boto3

        keys = keys or self.admin
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=keys.access_key_id,
            aws_secret_access_key=keys.secret_access_key,
        )

    def add_user(self, name: str, statements: list[dict[str, Any]]) -> KeyPair:
        iam = self.client("iam")
        iam.create_user(UserName=name)
        document = json.dumps({"Version": "2012-10-17", "Statement": statements})
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=document)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return KeyPair(key["AccessKeyId"], key["SecretAccessKey"])

    def add_prefix_user(self, name: str, bucket: str, prefix: str = "") -> KeyPair:
        """A user who may list `bucket` and do anything to the objects under `prefix` only."""
        objects = f"arn:aws:s3:::{bucket}/{prefix}*"
        return self.add_user(
            name, [{"Effect": "Allow", "Action": "s3:*", "Resource": [f"arn:aws:s3:::{bucket}", objects]}]
        )

    def enforce(self) -> None:
        request = urllib.request.Request(
            f"{self.endpoint}/moto-api/reset-auth",
            data=b"0",
            method="POST",
            headers={"Content-Type": "text/plain"},
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
