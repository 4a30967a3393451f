"""Admission control: a cap on inference requests in flight, per-request deadlines, and
cancellation of queued work whose client has gone.

Protocol-agnostic parts live here (`Admission`, `RequestScope`, deadline parsing); each
protocol hooks in once: `AdmissionMiddleware` below for REST, `grpc_v2/admission.py` for
gRPC. The data plane reads the request's scope from a context variable, so that the codec
and route code between a hook and the data plane need not carry it.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from mserve_runtime.errors import ClientGone, DeadlineExceeded, InvalidInput

log = logging.getLogger("mserve.admission")

TIMEOUT_HEADER = "Inference-Timeout-Ms"
_TIMEOUT_HEADER_KEY = TIMEOUT_HEADER.lower().encode()
# gRPC's own wire format caps a timeout at 8 digits; the header follows it.
MAX_TIMEOUT_MS = 99_999_999
RETRY_AFTER_S = 1
# A request that has waited this long gets a task watching its connection; shorter waits
# finish before a disconnect could be noticed, and a watcher per request would cost more.
WATCH_AFTER_S = 0.02

# Methods that never carry inference (health, metadata, metrics, docs): never shed.
_NEVER_SHED = frozenset({"GET", "HEAD", "OPTIONS"})


def default_max_in_flight(workers: int, max_batch_size: int) -> int:
    """Two full batches per inference worker (one running, one filling), at least 32.

    The floor keeps one request per connection from 32 keep-alive clients admitted: a model
    as small as the tiny MLP is bound by HTTP, not by its queue, and would otherwise shed
    load it can serve.
    """
    return max(32, 2 * workers * max_batch_size)


class Admission:
    """Counts inference requests in flight and refuses the one beyond `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def try_enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def parse_timeout_ms(value: str) -> float:
    """The header's value as seconds; InvalidInput naming the header for anything else."""
    text = value.strip()
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= MAX_TIMEOUT_MS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidInput(
            f"header {TIMEOUT_HEADER} must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, "
            f"received {shown!r}"
        )
    return int(text) / 1000


@dataclass(slots=True)
class RequestScope:
    """One admitted request: its deadline (event-loop time) and why its work was abandoned."""

    deadline: float
    deadline_source: str
    reason: str | None = None
    _abandon: Callable[[], Any] | None = None

    def watch(self, future: asyncio.Future[Any]) -> None:
        """`future` is this request's queued work: cancel it if the client goes or time runs out."""
        self._abandon = future.cancel

    def unwatch(self) -> None:
        self._abandon = None

    def expire(self) -> None:
        self._give_up("deadline")

    def client_gone(self) -> None:
        self._give_up("client_gone")

    def _give_up(self, reason: str) -> None:
        if self.reason is None and self._abandon is not None:
            self.reason = reason
            self._abandon()

    def error(self) -> DeadlineExceeded | ClientGone:
        if self.reason == "deadline":
            return DeadlineExceeded(f"deadline exceeded before the model ran (set by {self.deadline_source})")
        return ClientGone("the client disconnected; its queued work was dropped")


current_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "mserve_request_scope", default=None
)


def new_scope(default_timeout_s: float, asked_s: float | None, source: str) -> RequestScope:
    """A scope whose deadline is the sooner of the client's (`asked_s`) and the server's."""
    now = asyncio.get_running_loop().time()
    if asked_s is not None and asked_s < default_timeout_s:
        return RequestScope(now + asked_s, source)
    return RequestScope(now + default_timeout_s, "MSERVE_REQUEST_TIMEOUT_S")


class _ConnectionWatch:
    """Wraps `receive`: once the body is read and the request has waited WATCH_AFTER_S,
    a task waits for `http.disconnect` and abandons the request's queued work."""

    __slots__ = ("_receive", "_request", "_task", "_timer")

    def __init__(self, receive: Any, request: RequestScope) -> None:
        self._receive = receive
        self._request = request
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    async def receive(self) -> dict[str, Any]:
        message = await self._receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            self._timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, self._start)
        return message

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._wait_for_disconnect())

    async def _wait_for_disconnect(self) -> None:
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self._request.client_gone()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()


async def _answer(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AdmissionMiddleware:
    """REST: shed requests beyond the cap with 503 + Retry-After before reading their body,
    give each admitted one its deadline, and watch its connection while it waits."""

    def __init__(
        self, app: Any, admission: Admission, default_timeout_s: float, on_shed: Callable[[], None]
    ) -> None:
        self.app = app
        self.admission = admission
        self.default_timeout_s = default_timeout_s
        self.on_shed = on_shed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in _NEVER_SHED:
            await self.app(scope, receive, send)
            return
        asked = None
        for key, value in scope["headers"]:
            if key == _TIMEOUT_HEADER_KEY:
                try:
                    asked = parse_timeout_ms(value.decode("latin-1"))
                except InvalidInput as exc:
                    await _answer(send, exc.status_code, exc.message, [])
                    return
        if not self.admission.try_enter():
            self.on_shed()
            await _answer(
                send,
                503,
                f"server overloaded: {self.admission.limit} requests already in flight "
                "(MSERVE_MAX_IN_FLIGHT); retry later",
                [(b"retry-after", str(RETRY_AFTER_S).encode())],
            )
            return
        request = new_scope(self.default_timeout_s, asked, f"the {TIMEOUT_HEADER} header")
        token = current_scope.set(request)
        watch = _ConnectionWatch(receive, request)
        try:
            await self.app(scope, watch.receive, send)
        finally:
            self.admission.leave()
            watch.close()
            current_scope.reset(token)
