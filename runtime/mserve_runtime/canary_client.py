"""The one HTTP client a stable pod reaches its canary with, for forwards (canary_forward.py)
and mirrors (shadow_mirror.py): an aiohttp session with a kept-alive connection pool.

aiohttp rather than httpx here: measured alone against a canary, httpx.AsyncClient spent about
1.4 ms of CPU per request and aiohttp 0.25 to 0.33 ms (docs/runtime.md, "Measured cost"), and
every forward or mirror pays it on the stable's event loop.

An answer's bytes come as the canary sent them (no decompression: the canary is asked for
`identity`, and one that encodes anyway is passed on with its `Content-Encoding`), and no
more than `max_bytes` of them are read: a larger answer is refused before its body is read
when it declares its length, and the moment it passes the bound when it streams.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

CONNECT_TIMEOUT_S = 1.0
# Below uvicorn's default keep-alive (5 s) on the canary: a POST on a connection the server is
# closing at that moment would fail (aiohttp retries only idempotent methods).
KEEPALIVE_S = 4.0
MAX_CONNECTIONS = 256


class CanaryUnansweredError(Exception):
    """The canary gave no usable answer: unreachable, timed out, cut off, or larger than allowed."""


@dataclass(frozen=True, slots=True)
class CanaryAnswer:
    status: int
    body: bytes
    headers: CIMultiDictProxy[str]


def header_text(value: bytes) -> str:
    """A header value as aiohttp takes it: UTF-8 bytes are sent back unchanged, others as Latin-1."""
    try:
        return value.decode()
    except UnicodeDecodeError:
        return value.decode("latin-1")


def wire_bytes(value: str) -> bytes:
    """A header value aiohttp received, as the bytes that came (it decodes them with surrogateescape)."""
    return value.encode("utf-8", "surrogateescape")


class CanaryClient:
    """POSTs to the canary; `open` and `close` belong to the server's lifespan (the session
    must be made on the running loop)."""

    def __init__(self, max_bytes: int, setting: str) -> None:
        self.max_bytes = max_bytes
        self.setting = setting
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, keepalive_timeout=KEEPALIVE_S)
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers={"Accept-Encoding": "identity"},
            # What the caller sent is what goes: no Content-Type made up for a request without one.
            skip_auto_headers=("Content-Type",),
            auto_decompress=False,
            trust_env=False,
        )

    async def post(
        self, url: str, body: bytes, headers: list[tuple[str, str]], timeout_s: float
    ) -> CanaryAnswer:
        """The canary's answer, whatever its status; CanaryUnansweredError when it gave none."""
        if self._session is None:
            raise CanaryUnansweredError("the client is not open")
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, CONNECT_TIMEOUT_S))
        try:
            async with self._session.post(
                URL(url, encoded=True),  # the path and query as the client sent them
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as answer:
                declared = answer.content_length
                if declared is not None and declared > self.max_bytes:
                    answer.close()  # the unread body is never read: the connection goes
                    raise CanaryUnansweredError(self._too_large(f" of {declared} bytes"))
                if declared is not None:
                    content = await answer.read()  # the parser stops at the declared length
                else:
                    content = await self._read_streamed(answer)
                return CanaryAnswer(answer.status, content, answer.headers)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise CanaryUnansweredError(f"{type(exc).__name__}: {exc}") from exc

    async def _read_streamed(self, answer: aiohttp.ClientResponse) -> bytes:
        content = bytearray()
        async for chunk in answer.content.iter_any():
            if len(content) + len(chunk) > self.max_bytes:
                answer.close()
                raise CanaryUnansweredError(self._too_large(""))
            content += chunk
        return bytes(content)

    def _too_large(self, size: str) -> str:
        return f"the canary's answer{size} exceeds the limit of {self.max_bytes} bytes ({self.setting})"

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
