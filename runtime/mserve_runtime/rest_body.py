"""The one reader of REST request bodies: the size limit holds before and while bytes arrive.

Content-Length is checked before a byte is read; a body without one (chunked) is counted
as it streams and refused the moment it passes the limit; gzip/deflate bodies are
decompressed no further than the limit.
"""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from mserve_runtime.errors import InvalidInput, PayloadTooLarge

Receive = Callable[[], Awaitable[dict[str, Any]]]


def too_large(
    limit: int, setting: str, size: int | None = None, what: str = "request body"
) -> PayloadTooLarge:
    got = f" of {size} bytes" if size is not None else ""
    return PayloadTooLarge(f"{what}{got} exceeds the limit of {limit} bytes ({setting})")


def declared_length(value: bytes | None) -> int | None:
    """The Content-Length header's value; None when absent (chunked), InvalidInput when not a number."""
    if value is None:
        return None
    if not value.isdigit():
        raise InvalidInput(f"Content-Length must be a non-negative integer, received {value!r:.40}")
    return int(value)


async def read_body(
    receive: Receive, declared: int | None, limit: int, setting: str
) -> bytes | bytearray | None:
    """The whole body, or None if the client went away; PayloadTooLarge past `limit` bytes."""
    if declared is not None and declared > limit:
        raise too_large(limit, setting, declared)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        single: bytes = message.get("body", b"")
        if len(single) > limit:
            raise too_large(limit, setting)
        return single
    body = bytearray()
    while True:
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            if len(body) + len(chunk) > limit:
                raise too_large(limit, setting)
            body += chunk
        if not message.get("more_body", False):
            return body
        message = await receive()


def undo_content_encoding(
    body: bytes | bytearray, encoding: str | None, limit: int, setting: str
) -> bytes | bytearray:
    """The body with Content-Encoding (gzip or deflate, as tritonclient sends) undone, within `limit`."""
    if not encoding or encoding == "identity":
        return body
    if encoding == "gzip":
        decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    elif encoding == "deflate":
        decompressor = zlib.decompressobj()
    else:
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r} (use gzip or deflate)")
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise InvalidInput(f"cannot decompress the {encoding} request body: {exc}") from None
    if len(out) > limit:
        raise too_large(limit, setting, what="decompressed request body")
    return out
