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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from mserve_runtime.concurrency_limit import GradientLimit
from mserve_runtime.errors import ClientGone, DeadlineExceeded, InvalidInput

TIMEOUT_HEADER = "Inference-Timeout-Ms"
_TIMEOUT_HEADER_KEY = TIMEOUT_HEADER.lower().encode()
_HEADER_SOURCE = f"the {TIMEOUT_HEADER} header"
# gRPC's own wire format caps a timeout at 8 digits; the header follows it.
MAX_TIMEOUT_MS = 99_999_999
RETRY_AFTER_S = 1
# Queued requests are checked on one shared tick rather than a timer each (a timer and a
# watcher task per request cost the tiny model a tenth of its throughput): deadlines fire
# up to one tick late, and a REST request queued for WATCH_AFTER_S gets a task watching its
# connection (shorter waits end before a disconnect could matter).
TICK_S = 0.01
WATCH_AFTER_S = 0.02

# Methods that never carry inference (health, metadata, metrics, docs): never shed.
NEVER_SHED = frozenset({"GET", "HEAD", "OPTIONS"})
# The adaptive limit's tolerance when the setting is unset and dynamic batching is on.
DEFAULT_TOLERANCE = 3.0
# The adaptive limit never goes below this many requests in flight (adaptive_floor).
ADAPTIVE_FLOOR = 8
# Set in a request's ASGI scope by rest_shedding.py when it took the request's slot already.
ADMITTED_KEY = "mserve.admitted"


def default_max_in_flight(workers: int, max_batch_size: int) -> int:
    """Two full batches per inference worker (one running, one filling), at least 32.

    The floor keeps one request per connection from 32 keep-alive clients admitted: a model
    as small as the tiny MLP is bound by HTTP, not by its queue, and would otherwise shed
    load it can serve.
    """
    return max(32, 2 * workers * max_batch_size)


def delay_floor(workers: int, max_batch_size: int) -> int:
    """Requests admitted whatever the queue delay: one full batch per inference worker (at
    least 32, as for the count), so that shedding for delay never starves the model."""
    return max(32, workers * max_batch_size)


def queue_wait_bound(max_queue_delay_ms: float, batch_delay_s: float) -> float:
    """The queue wait past which requests are refused (`MSERVE_MAX_QUEUE_DELAY_MS` plus the
    batching delay; inf when the setting is 0)."""
    return max_queue_delay_ms / 1000 + batch_delay_s if max_queue_delay_ms else math.inf


def latency_tolerance(setting: float | None, batching: bool) -> float:
    """The adaptive limit's tolerance (0 = off): the setting, or unset DEFAULT_TOLERANCE with
    dynamic batching on and off without it. Without batching a run's sojourn is its wait in the
    executor's queue, mostly GIL hand-offs with the event loop for a small model, and the limit
    shed 32 closed-loop connections of the tiny MLP (docs/runtime.md)."""
    if setting is not None:
        return setting
    return DEFAULT_TOLERANCE if batching else 0.0


def adaptive_floor(workers: int, max_in_flight: int) -> int:
    """The least the adaptive limit admits: two requests per inference worker (one running, one
    queued), and at least ADAPTIVE_FLOOR, so that a handful of closed-loop clients (8 connections
    on a model with one worker, as served-vs-raw measures) are never refused; at most the cap."""
    return min(max_in_flight, max(ADAPTIVE_FLOOR, 2 * workers))


class Admission:
    """Counts inference requests in flight and refuses the one beyond `limit`, or beyond
    `floor` while the latest model run to start had waited more than `max_wait_s` for it;
    watches the admitted ones whose work is queued (deadline, client gone) on one shared tick.

    The wait bound is what keeps admitted latency near the model's own: a count that fills
    the model at one size is seconds of queue at another (a model 100x slower per row).
    """

    def __init__(
        self, limit: int, floor: int = 0, max_wait_s: float = math.inf, adaptive: GradientLimit | None = None
    ) -> None:
        self.limit = limit
        self.max_limit = limit
        self.adaptive = adaptive
        self.floor = floor
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0  # how long the latest run to start had waited in the queue
        self.in_flight = 0
        self._queued: set[RequestScope] = set()
        self._ticking: asyncio.AbstractEventLoop | None = None

    def try_enter(self) -> bool:
        in_flight = self.in_flight
        if in_flight >= self.limit or (in_flight >= self.floor and self.waited_s > self.max_wait_s):
            return False
        self.in_flight = in_flight + 1
        return True

    def observe_wait(self, seconds: float) -> None:
        """A model run starts now; its oldest request had waited `seconds` (any thread may call)."""
        self.waited_s = seconds

    def observe_run(self, sojourn_s: float) -> None:
        """A model run ended, `sojourn_s` after its oldest request was queued (event loop only)."""
        if self.adaptive is not None:
            self.limit = self.adaptive.observe(sojourn_s, time.perf_counter())

    def refusal(self) -> str:
        """Why the latest refused request was refused, for its 503 / UNAVAILABLE."""
        if self.in_flight >= self.limit and self.limit < self.max_limit and self.adaptive is not None:
            return (
                f"server overloaded: {self.limit} requests already in flight, the most whose model runs "
                f"finish within {self.adaptive.tolerance:g}x the fastest recent one "
                "(MSERVE_LATENCY_TOLERANCE); retry later"
            )
        if self.in_flight >= self.limit:
            return (
                f"server overloaded: {self.limit} requests already in flight (MSERVE_MAX_IN_FLIGHT); "
                "retry later"
            )
        return (
            f"server overloaded: requests wait {1000 * self.waited_s:.0f} ms for the model, more than "
            f"{1000 * self.max_wait_s:.0f} ms (MSERVE_MAX_QUEUE_DELAY_MS plus the batching delay); "
            "retry later"
        )

    def leave(self) -> None:
        self.in_flight -= 1

    def queue(self, scope: RequestScope, work: asyncio.Future[Any]) -> None:
        """`work` is `scope`'s queued work: cancel it if the deadline passes or the client goes."""
        scope.abandon = work.cancel
        loop = asyncio.get_running_loop()
        scope.queued_at = loop.time()
        self._queued.add(scope)
        if self._ticking is not loop:
            self._ticking = loop
            loop.call_later(TICK_S, self._check)

    def unqueue(self, scope: RequestScope) -> None:
        self._queued.discard(scope)
        scope.abandon = None
        if scope.watcher is not None:
            scope.watcher.cancel()

    def _check(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for scope in list(self._queued):
            if now >= scope.deadline:
                scope.give_up("deadline")
            elif (
                scope.receive is not None and scope.watcher is None and now - scope.queued_at >= WATCH_AFTER_S
            ):
                scope.watcher = loop.create_task(_wait_for_disconnect(scope))
        if self._queued:
            loop.call_later(TICK_S, self._check)
        else:
            self._ticking = None


def parse_timeout_ms(value: str) -> float:
    """The header's value as seconds; InvalidInput naming the header for anything else."""
    text = value.strip()
    fits = len(text) <= len(str(MAX_TIMEOUT_MS)) and text.isascii() and text.isdigit()
    if not fits or not 1 <= int(text) <= MAX_TIMEOUT_MS:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidInput(
            f"header {TIMEOUT_HEADER} must be a whole number of milliseconds from 1 to {MAX_TIMEOUT_MS}, "
            f"received {shown!r}"
        )
    return int(text) / 1000


@dataclass(slots=True, eq=False)
class RequestScope:
    """One admitted request: its deadline (event-loop time) and why its work was abandoned."""

    deadline: float
    deadline_source: str
    receive: Any = None  # REST: the ASGI receive, to notice a disconnect while queued
    reason: str | None = None
    queued_at: float = 0.0
    abandon: Callable[[], Any] | None = None
    watcher: asyncio.Task[None] | None = None

    def give_up(self, reason: str) -> None:
        """Drop the queued work (if any is queued), for `reason`: deadline or client_gone."""
        if self.reason is None and self.abandon is not None:
            self.reason = reason
            self.abandon()

    def error(self) -> DeadlineExceeded | ClientGone:
        if self.reason == "deadline":
            return DeadlineExceeded(f"deadline exceeded before the model ran (set by {self.deadline_source})")
        return ClientGone("the client disconnected; its queued work was dropped")


async def _wait_for_disconnect(scope: RequestScope) -> None:
    # Called only once the body was read (the work is queued), so nothing else reads `receive`.
    message = await scope.receive()
    if message["type"] == "http.disconnect":
        scope.give_up("client_gone")


current_scope: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "mserve_request_scope", default=None
)


def new_scope(
    default_timeout_s: float, asked_s: float | None, source: str, receive: Any = None
) -> RequestScope:
    """A scope whose deadline is the sooner of the client's (`asked_s`) and the server's."""
    now = asyncio.get_running_loop().time()
    if asked_s is not None and asked_s < default_timeout_s:
        return RequestScope(now + asked_s, source, receive)
    return RequestScope(now + default_timeout_s, "MSERVE_REQUEST_TIMEOUT_S", receive)


async def send_error(send: Any, status: int, message: str, headers: list[tuple[bytes, bytes]]) -> None:
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
    and give each admitted one its deadline and a way to notice its client leaving."""

    def __init__(
        self, app: Any, admission: Admission, default_timeout_s: float, on_shed: Callable[[], None]
    ) -> None:
        self.app = app
        self.admission = admission
        self.default_timeout_s = default_timeout_s
        self.on_shed = on_shed

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in NEVER_SHED:
            await self.app(scope, receive, send)
            return
        admission = self.admission
        entered = bool(scope.get(ADMITTED_KEY))  # the protocol took the slot (rest_shedding.py)
        try:
            asked = None
            for key, value in scope["headers"]:
                if key == _TIMEOUT_HEADER_KEY:
                    try:
                        asked = parse_timeout_ms(value.decode("latin-1"))
                    except InvalidInput as exc:
                        await send_error(send, exc.status_code, exc.message, [])
                        return
            if not entered:
                entered = admission.try_enter()
                if not entered:
                    self.on_shed()
                    retry = [(b"retry-after", str(RETRY_AFTER_S).encode())]
                    await send_error(send, 503, admission.refusal(), retry)
                    return
            token = current_scope.set(new_scope(self.default_timeout_s, asked, _HEADER_SOURCE, receive))
            try:
                await self.app(scope, receive, send)
            finally:
                current_scope.reset(token)
        finally:
            if entered:
                admission.in_flight -= 1
