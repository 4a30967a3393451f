"""Shadow traffic: a request the stable served is sent again to the canary, off the response
path, and the two answers are compared (shadow_compare.py) into the `mserve_shadow_*` series.

At most `max_in_flight` mirrors run at once; a request due for mirroring beyond that is
dropped and counted: mirroring never makes a client wait, and a slow canary costs at most
that many open requests here. A canary that fails to answer (error, timeout, non-200,
undecodable) is counted as an `error` comparison, not as a disagreement.
"""

from __future__ import annotations

import asyncio
import logging

import numpy as np
import orjson

from mserve_runtime.canary_client import CanaryClient
from mserve_runtime.canary_metrics import CanaryMetrics
from mserve_runtime.request_limits import RequestLimits
from mserve_runtime.rest_body import undo_content_encoding
from mserve_runtime.rest_codec import decode_infer_outputs, parse_header_length
from mserve_runtime.rest_infer import OFF_LOOP_BYTES
from mserve_runtime.rest_routes import RestResponse
from mserve_runtime.rollout_config import CanaryConfig
from mserve_runtime.shadow_compare import Agreement, compare_answers

log = logging.getLogger("mserve.shadow")

_HEADER_LENGTH = b"inference-header-content-length"


def _v1_outputs(body: bytes) -> dict[str, np.ndarray]:
    predictions = orjson.loads(body)["predictions"]
    if predictions and all(isinstance(row, dict) for row in predictions):
        columns = {name: [row[name] for row in predictions] for name in predictions[0]}
    else:
        columns = {"predictions": predictions}
    arrays = {name: np.asarray(values) for name, values in columns.items()}
    return {name: a.astype(object) if a.dtype.kind in "USO" else a for name, a in arrays.items()}


def answer_outputs(
    body: bytes, header_length: bytes | None, v1: bool, limits: RequestLimits
) -> dict[str, np.ndarray]:
    """The output tensors of a V2 infer (or V1 `:predict`) answer, by name."""
    if v1:
        return _v1_outputs(body)
    declared = None if header_length is None else header_length.decode("latin-1")
    return decode_infer_outputs(body, parse_header_length(declared, len(body)), limits)


def _response_header_length(response: RestResponse) -> bytes | None:
    return next((value for key, value in response.headers if key == _HEADER_LENGTH), None)


class ShadowMirror:
    """Sends mirrored requests to the canary with `client` and counts how the answers compared."""

    def __init__(
        self,
        client: CanaryClient,
        metrics: CanaryMetrics,
        limits: RequestLimits,
        max_in_flight: int,
        timeout_s: float,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.limits = limits
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.tasks: set[asyncio.Task[None]] = set()

    def submit(
        self,
        canary: CanaryConfig,
        target: str,
        body: bytes,
        headers: list[tuple[str, str]],
        served: RestResponse,
        v1: bool,
    ) -> None:
        """Mirror one request the stable answered with `served` (200), or drop it when full."""
        if len(self.tasks) >= self.max_in_flight:
            self.metrics.dropped.inc()
            return
        task = asyncio.get_running_loop().create_task(self._mirror(canary, target, body, headers, served, v1))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _mirror(
        self,
        canary: CanaryConfig,
        target: str,
        body: bytes,
        headers: list[tuple[str, str]],
        served: RestResponse,
        v1: bool,
    ) -> None:
        try:
            answer = await self.client.post(canary.url + target, body, headers, self.timeout_s)
            if answer.status != 200:
                raise ValueError(f"the canary answered {answer.status}: {answer.body[:200]!r}")
            encoding = answer.headers.get("content-encoding")
            content = undo_content_encoding(
                answer.body, encoding, self.limits.max_request_bytes, "MSERVE_MAX_REQUEST_BYTES"
            )
            args = (canary, served, bytes(content), answer.headers.get(_HEADER_LENGTH.decode()), v1)
            if len(content) + len(served.body) < OFF_LOOP_BYTES:
                agreement = self._compare(*args)
            else:
                agreement = await asyncio.to_thread(self._compare, *args)
        except Exception as exc:  # whatever the canary sent, the comparison is an error, never a crash
            self.metrics.error.inc()
            log.debug("mirrored request to %s got no comparable answer: %s", canary.url, exc)
            return
        self.metrics.compared(agreement)

    def _compare(
        self, canary: CanaryConfig, served: RestResponse, body: bytes, header_length: str | None, v1: bool
    ) -> Agreement:
        reference = answer_outputs(served.body, _response_header_length(served), v1, self.limits)
        length = None if header_length is None else header_length.encode("latin-1")
        candidate = answer_outputs(body, length, v1, self.limits)
        return compare_answers(reference, candidate, canary.cosine, canary.max_abs_error)

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
