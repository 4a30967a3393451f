"""Read-only http(s):// model sources, streamed."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlsplit

from mserve_runtime.atomic_write import CHUNK_BYTES
from mserve_runtime.storage_errors import FetchError

TIMEOUT_S = 30.0
_HEADERS = {"User-Agent": "mserve-fetch"}


def _explain(uri: str, exc: BaseException) -> FetchError:
    if isinstance(exc, urllib.error.HTTPError):
        return FetchError(uri, f"HTTP {exc.code} {exc.reason}")
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    parts = urlsplit(uri)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    if isinstance(reason, ConnectionRefusedError):
        return FetchError(uri, f"connection refused by {where}")
    if isinstance(reason, socket.gaierror):
        return FetchError(uri, f"cannot resolve host {parts.hostname!r}")
    if isinstance(reason, TimeoutError):
        return FetchError(uri, f"{where} did not answer within {TIMEOUT_S:.0f}s")
    if isinstance(reason, http.client.IncompleteRead):
        return FetchError(uri, f"connection closed after {len(reason.partial)} bytes, before the end")
    return FetchError(uri, f"HTTP request failed: {reason}")


def body_chunks(uri: str) -> Iterator[bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(uri, headers=_HEADERS), timeout=TIMEOUT_S) as resp:
            expected = resp.headers.get("Content-Length")
            received = 0
            while chunk := resp.read(CHUNK_BYTES):
                received += len(chunk)
                yield chunk
            if expected is not None and received != int(expected):
                raise FetchError(uri, f"connection closed after {received} of {expected} bytes")
    except FetchError:
        raise
    except (OSError, http.client.HTTPException) as exc:
        raise _explain(uri, exc) from exc


def exists(uri: str) -> bool:
    request = urllib.request.Request(uri, headers=_HEADERS, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S):
            return True
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 410):
            return False
        raise _explain(uri, exc) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _explain(uri, exc) from exc
