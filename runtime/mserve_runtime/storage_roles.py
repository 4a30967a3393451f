"""Whose credentials a storage access uses: one role's own environment, or the standard AWS one.

A pod that reads a user's source model and writes the artifact store holds two sets of
credentials. The operator passes each under its own prefix, a Secret's keys verbatim after
it: `MSERVE_SOURCE_<key>` for the source, `MSERVE_STORE_<key>` for the artifact store. With
a role, only that role's variables are read, never plain `AWS_*` and never the other
role's, so a source URI that names the store is read with the source's keys (or none).
Without a role (local use), s3 access uses the standard AWS environment and http(s) none.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Literal, cast
from urllib.parse import urlsplit

from mserve_runtime.storage_errors import FetchError

Role = Literal["source", "store"]
ROLES: tuple[Role, ...] = ("source", "store")
DEFAULT_REGION = "us-east-1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def env_prefix(role: Role) -> str:
    return f"MSERVE_{role.upper()}_"


def parse_role(value: str | None) -> Role | None:
    """`source`, `store`, or None when not given; anything else (even "") raises ValueError."""
    if value is None:
        return None
    if value not in ROLES:
        raise ValueError(f"unknown role {value!r} (expected one of: {', '.join(ROLES)})")
    return cast(Role, value)


def _read(name: str) -> str | None:
    # A Secret made from a file often ends in a newline; no credential ends in one.
    value = os.environ.get(name, "").strip("\r\n")
    return value or None


@dataclass(frozen=True)
class S3Access:
    """Endpoint, region and keys for one role's S3 client (keys None: unsigned requests)."""

    role: Role | None
    endpoint: str | None
    region: str
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    # The variable that set `endpoint`, named in errors instead of the address itself.
    endpoint_from: str | None = None

    def env_name(self, key: str) -> str:
        """The variable that configures `key` (e.g. AWS_ACCESS_KEY_ID) for this role."""
        return env_prefix(self.role) + key if self.role else key


def _endpoint(uri: str, prefix: str) -> tuple[str | None, str | None]:
    for name in (prefix + "AWS_ENDPOINT_URL_S3", prefix + "AWS_ENDPOINT_URL"):
        value = _read(name)
        if value is None:
            continue
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(uri, f"{name} must be an http:// or https:// URL")
        return value, name
    return None, None


def s3_access(uri: str, role: Role | None) -> S3Access:
    """What an S3 client for `role` uses; raises FetchError when the role's keys are half set."""
    if role is None:
        region = _read("AWS_REGION") or _read("AWS_DEFAULT_REGION") or DEFAULT_REGION
        endpoint, endpoint_from = _endpoint(uri, "")
        return S3Access(None, endpoint, region, endpoint_from=endpoint_from)
    prefix = env_prefix(role)
    key_id, secret = _read(prefix + "AWS_ACCESS_KEY_ID"), _read(prefix + "AWS_SECRET_ACCESS_KEY")
    token = _read(prefix + "AWS_SESSION_TOKEN")
    if (key_id is None) != (secret is None) or (token and not key_id):
        raise FetchError(
            uri,
            f"{prefix}AWS_ACCESS_KEY_ID and {prefix}AWS_SECRET_ACCESS_KEY must be set together "
            f"(and {prefix}AWS_SESSION_TOKEN only with them)",
        )
    # The region is no secret: the install-wide AWS_REGION serves when the role names none.
    region = _read(prefix + "AWS_REGION") or _read("AWS_REGION") or DEFAULT_REGION
    endpoint, endpoint_from = _endpoint(uri, prefix)
    return S3Access(role, endpoint, region, key_id, secret, token, endpoint_from)


def http_authorization(uri: str, role: Role | None) -> tuple[str, str] | None:
    """(Authorization header value, where it came from) for an http(s) source, or None."""
    if role is None:
        return None
    prefix = env_prefix(role)
    token, user, password = (_read(prefix + key) for key in ("token", "username", "password"))
    if token and (user or password):
        raise FetchError(uri, f"set either {prefix}token or {prefix}username/{prefix}password, not both")
    if token:
        _check_header_safe(uri, prefix + "token", token)
        return f"Bearer {token}", prefix + "token"
    if user is None and password is None:
        return None
    if user is None or password is None:
        raise FetchError(uri, f"{prefix}username and {prefix}password must be set together")
    if ":" in user:
        raise FetchError(uri, f"{prefix}username must not contain ':' (HTTP basic authentication)")
    _check_header_safe(uri, prefix + "username", user)
    _check_header_safe(uri, prefix + "password", password)
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {encoded}", f"{prefix}username/{prefix}password"


def _check_header_safe(uri: str, name: str, value: str) -> None:
    # Never echo the value: it is a secret.
    if _CONTROL.search(value):
        raise FetchError(uri, f"{name} holds a control character (a line break?); it was not sent")
