"""Canary traffic split on the stable pods: a share of inference requests is forwarded to the
canary's Service and its answer returned; of those served here, a share is mirrored
(shadow_mirror.py). The rollout file (rollout_config.py) says where the canary is and how much.

`CanarySplit.wrap_routes` wraps the REST inference routes' handlers (V2 infer, its versioned
form, V1 `:predict`) once at start-up, and only when `MSERVE_ROLLOUT_FILE` is set: without it
the hot path is unchanged. A forward that fails (unreachable, timeout, 5xx) is served here:
the client never pays for a broken canary beyond the time the attempt took. Forwarded
requests are counted by the canary, not in this pod's request and usage series.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

from prometheus_client import CollectorRegistry

from mserve_runtime.admission import TIMEOUT_HEADER, current_scope
from mserve_runtime.canary_client import CanaryClient, CanaryUnansweredError, header_text, wire_bytes
from mserve_runtime.canary_metrics import CanaryMetrics
from mserve_runtime.canary_split import CreditShare
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.rest_routes import JSON, Handler, RestRequest, RestResponse, RestRoute
from mserve_runtime.rollout_config import CHECK_EVERY_S, CanaryConfig, RolloutFile
from mserve_runtime.shadow_mirror import ShadowMirror
from mserve_runtime.usage_metrics import current_usage

log = logging.getLogger("mserve.canary")

SPLIT_ROUTES = frozenset({"infer", "infer_versioned", "predict"})
# What a forwarded or mirrored request carries besides its body (X-API-Key: the other form of
# the client's credential, so that a canary with the same keys admits the same callers).
FORWARDED_HEADERS = (
    b"content-type",
    b"content-encoding",
    b"inference-header-content-length",
    b"authorization",
    b"x-api-key",
    TIMEOUT_HEADER.lower().encode(),
    b"x-request-id",
)
_FORWARDED = tuple((name, name.decode()) for name in FORWARDED_HEADERS)
# The canary is asked for `identity`; one that encodes anyway is passed on with its encoding.
_RETURNED_HEADERS = ("inference-header-content-length", "content-encoding")
# Set on what this pod sends to the canary; a request carrying it is never passed on again, so
# that a rollout file naming this pod's own Service cannot make requests go round in circles.
FORWARDED_MARK = (b"x-mserve-forwarded", b"1")
_MARK = (FORWARDED_MARK[0].decode(), FORWARDED_MARK[1].decode())


def _target(request: RestRequest) -> str:
    """The request's path and query as received (percent-encoding kept)."""
    scope = request.scope or {}
    path = scope.get("raw_path") or scope.get("path", "").encode()
    query = scope.get("query_string") or b""
    return (path + b"?" + query if query else path).decode("latin-1")


class CanarySplit:
    """The rollout file in force, the two credit counters (forward, mirror), the HTTP client
    to the canary and the mirror; `start`/`close` belong to the server's lifespan."""

    def __init__(
        self,
        rollout_file: str,
        registry: CollectorRegistry,
        limits: RequestLimits,
        shadow_max_in_flight: int,
        request_timeout_s: float,
    ) -> None:
        self.metrics = CanaryMetrics(registry)
        self.rollout = RolloutFile(rollout_file, self.metrics.applied, self.metrics.config_errors.inc)
        self.request_timeout_s = request_timeout_s
        self.forward_share = CreditShare()
        self.mirror_share = CreditShare()
        # An answer is held whole, as a request is: the same bound.
        self.client = CanaryClient(limits.max_request_bytes, "MSERVE_MAX_REQUEST_BYTES")
        self.mirror = ShadowMirror(self.client, self.metrics, limits, shadow_max_in_flight, request_timeout_s)
        self._poll: asyncio.Task[None] | None = None

    def wrap_routes(self, routes: list[RestRoute]) -> list[RestRoute]:
        """`routes` with the inference handlers split (the others as they are)."""
        return [
            dataclasses.replace(route, handler=self.wrap(route.handler, v1=route.name == "predict"))
            if route.name in SPLIT_ROUTES
            else route
            for route in routes
        ]

    def wrap(self, handler: Handler, v1: bool = False) -> Handler:
        async def split(request: RestRequest) -> RestResponse:
            canary = self.rollout.config.canary
            if canary is None or FORWARDED_MARK[0] in request.headers:
                return await handler(request)
            if self.forward_share.take(canary.weight):
                answer = await self.forward(canary, request)
                if answer is not None:
                    return answer
            response = await handler(request)
            if response.status == 200 and self.mirror_share.take(canary.mirror_percent):
                body = bytes(request.body)
                self.mirror.submit(canary, _target(request), body, self._headers(request), response, v1)
            return response

        return split

    @staticmethod
    def _headers(request: RestRequest) -> list[tuple[str, str]]:
        headers = [
            (text, header_text(request.headers[name])) for name, text in _FORWARDED if name in request.headers
        ]
        headers.append(_MARK)
        return headers

    async def forward(self, canary: CanaryConfig, request: RestRequest) -> RestResponse | None:
        """The canary's answer (status < 500) to `request`, or None when it gave none in time."""
        scope = current_scope.get()
        remaining = self.request_timeout_s
        if scope is not None:
            remaining = scope.deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None  # no time left to ask anyone else: served (or timed out) here
        started = time.perf_counter()
        try:
            answer = await self.client.post(
                canary.url + _target(request), bytes(request.body), self._headers(request), remaining
            )
        except CanaryUnansweredError as exc:
            failure = str(exc)
        else:
            failure = f"status {answer.status}" if answer.status >= 500 else None
        self.metrics.forward_duration.observe(time.perf_counter() - started)
        if failure is not None:
            self.metrics.failed.inc()
            log.debug("forward to canary %s failed (%s); serving it here", canary.url, failure)
            return None
        self.metrics.answered.inc()
        usage = current_usage.get()
        if usage is not None:
            usage.forwarded = True  # metered by the canary that served it
        headers = [
            (name.encode(), wire_bytes(answer.headers[name]))
            for name in _RETURNED_HEADERS
            if name in answer.headers
        ]
        content_type = answer.headers.get("content-type")
        return RestResponse(
            answer.body,
            answer.status,
            content_type=wire_bytes(content_type) if content_type else JSON,
            headers=headers,
        )

    def start(self) -> None:
        """Re-read the rollout file every CHECK_EVERY_S (on a side thread) until `close`."""

        async def poll() -> None:
            while True:
                await asyncio.sleep(CHECK_EVERY_S)
                try:
                    await asyncio.to_thread(self.rollout.check)
                except Exception:
                    log.exception("re-reading the rollout file failed")

        self.client.open()
        self._poll = asyncio.get_running_loop().create_task(poll())

    async def close(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
        await self.mirror.close()
        await self.client.close()
