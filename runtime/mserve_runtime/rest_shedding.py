"""REST load shedding inside uvicorn's HTTP protocol, before any ASGI work.

A 503 answered by `AdmissionMiddleware` still costs an ASGI task, a scope, two `send` calls
and the response headers built in Python: nearly what a served tiny request costs, so a
one-core server spent most of its time refusing under 5x overload. Here the refusal is
decided as soon as the request's headers are parsed (httptools, in C) and answered with
pre-encoded bytes written straight to the socket; the body that follows is skipped by the
parser, the connection stays open. An admitted request has its slot taken here too (so that a
burst read in one event-loop iteration cannot all pass before any of it counts) and carries it
in its scope to the middleware, which keeps the deadline, header and access-log duties.

In a pool (`model_gate`), the slot of the model the URL names is taken first
(pool_admission.py): a model past its share is refused without touching the process's slots.

Only when a connection has no request in progress (HTTP pipelining keeps order through
uvicorn's own queue, where the middleware decides), and only with the httptools protocol;
with any other the middleware alone sheds, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from mserve_runtime.admission import ADMITTED_KEY, NEVER_SHED, RETRY_AFTER_S, Admission

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # pragma: no cover - uvicorn[standard] brings httptools
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

_NEVER_SHED_METHODS = frozenset(method.encode() for method in NEVER_SHED)


class _Answered:
    """Stands in for uvicorn's request cycle of a request answered without one: complete, so
    the parser's body and end-of-message callbacks skip it and shutdown closes the connection."""

    response_complete = True
    disconnected = False

    class message_event:  # noqa: N801 - uvicorn calls cycle.message_event.set()
        @staticmethod
        def set() -> None:
            return None


_ANSWERED = _Answered()


class ModelGate(Protocol):
    """Admission per model (pool_admission.ModelAdmissions)."""

    def enter_url(self, method: bytes, url: bytes, scope: dict[str, Any]) -> str | None: ...

    def leave_scope(self, scope: dict[str, Any]) -> None: ...


def refusal_bytes(message: str, keep_alive: bool, default_headers: bytes = b"") -> bytes:
    """A whole 503 response with Retry-After and a JSON error body, as written to the socket;
    `default_headers` (uvicorn's: the date) as header lines."""
    body = orjson.dumps({"error": message})
    head = (
        b"HTTP/1.1 503 Service Unavailable\r\n%scontent-type: application/json\r\n"
        b"retry-after: %d\r\ncontent-length: %d\r\n" % (default_headers, RETRY_AFTER_S, len(body))
    )
    return head + (b"\r\n" if keep_alive else b"connection: close\r\n\r\n") + body


def shedding_protocol(
    admission: Admission,
    on_shed: Callable[[], None],
    access_log: logging.Logger | None,
    model_gate: ModelGate | None = None,
) -> type[Any] | None:
    """uvicorn's httptools protocol class that refuses past `admission` before ASGI (None
    without httptools: the middleware then sheds alone)."""
    if HttpToolsProtocol is None:  # pragma: no cover
        return None
    # (message, keep-alive) -> the default headers it was built with, and the response.
    encoded: dict[tuple[str, bool], tuple[list[Any], bytes]] = {}

    class SheddingHttpToolsProtocol(HttpToolsProtocol):
        def on_headers_complete(self) -> None:
            cycle = self.cycle
            idle = cycle is None or cycle.response_complete
            if not idle or self.parser.get_method() in _NEVER_SHED_METHODS or self.parser.should_upgrade():
                super().on_headers_complete()
                return
            message = None
            if model_gate is not None:
                scope: Any = self.scope
                message = model_gate.enter_url(self.parser.get_method(), self.url, scope)
            if message is None:
                if admission.try_enter():
                    self.scope[ADMITTED_KEY] = True  # type: ignore[literal-required]
                    super().on_headers_complete()
                    return
                if model_gate is not None:
                    model_gate.leave_scope(scope)
                on_shed()
                message = admission.refusal()
            keep_alive = self.parser.should_keep_alive()
            # uvicorn replaces its default headers (the date) with a new list every second.
            defaults = self.server_state.default_headers
            cached = encoded.get((message, keep_alive))
            if cached is not None and cached[0] is defaults:
                answer = cached[1]
            else:
                if len(encoded) > 16:  # the message may carry a changing figure: keep a few
                    encoded.clear()
                lines = b"".join(b"%s: %s\r\n" % pair for pair in defaults)
                answer = refusal_bytes(message, keep_alive, lines)
                encoded[(message, keep_alive)] = (defaults, answer)
            self.transport.write(answer)
            self.cycle = _ANSWERED  # type: ignore[assignment]
            if access_log is not None and access_log.isEnabledFor(logging.INFO):
                self._log_refusal(access_log)
            if keep_alive:
                self.on_response_complete()
            else:
                self.transport.close()

        def _log_refusal(self, logger: logging.Logger) -> None:
            client = self.client[0] if self.client else None
            method, path = self.parser.get_method().decode("ascii"), self.url.decode("latin-1")
            logger.info(
                '%s "%s %s" %d %.2fms',
                client or "-",
                method,
                path,
                503,
                0.0,
                extra={"client": client, "method": method, "path": path, "status": 503, "duration_ms": 0.0},
            )

    return SheddingHttpToolsProtocol
