"""Admission per model of a pool: one model's flood or slow requests cannot take every slot.

The process-wide cap (`MSERVE_MAX_IN_FLIGHT`, admission.py) still comes first; behind it each
model may hold at most `MSERVE_POOL_MODEL_MAX_IN_FLIGHT` requests (default half the process's),
and past one full batch per inference worker its requests are refused while its latest run
had waited longer than `MSERVE_MAX_QUEUE_DELAY_MS` (plus the batching delay) in its queue,
as a single-model server does. A refused request gets 503 with Retry-After (gRPC
UNAVAILABLE) naming the model and the setting; the other models keep their share.

REST takes the model's slot from the URL as soon as the headers are parsed, before the
process's slot (rest_shedding.py calls `enter_url`; so that a flood's refusals never hold
process slots another model's requests need, and a slow upload counts too), or in
`PoolAdmissionMiddleware` where the protocol did not; gRPC, whose model name is inside the
message, when the data plane is called (`ModelAdmissions.holding`). A name not in the
repository's listing never gets an `Admission` of its own (no request can mint state): it goes
on to its 404.
"""

from __future__ import annotations

import contextlib
import contextvars
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httptools

from mserve_runtime.admission import ADMITTED_KEY, RETRY_AFTER_S, Admission, send_error
from mserve_runtime.errors import ConfigError, Overloaded

CAP_SETTING = "MSERVE_POOL_MODEL_MAX_IN_FLIGHT"
# Set in a request's ASGI scope by the HTTP protocol when it took the model's slot already.
MODEL_ADMITTED_KEY = "mserve.model_admitted"

# Set by the REST middleware for each inference request: the model whose slot it took, or ""
# when it took none (a name not listed yet); unset on gRPC.
_held: contextvars.ContextVar[str | None] = contextvars.ContextVar("mserve_pool_model_held", default=None)


def model_cap(setting: int, process_cap: int) -> int:
    """Requests one model may hold: `setting`, or half the process's cap (at least 1) when 0.
    ConfigError naming both settings when it is above the process's cap."""
    if setting > process_cap:
        raise ConfigError(
            f"{CAP_SETTING}={setting} is more than the process admits in all "
            f"(MSERVE_MAX_IN_FLIGHT: {process_cap}); set at most {process_cap} (equal turns the "
            "per-model cap off) or 0 for half of it"
        )
    return setting or max(1, process_cap // 2)


class ModelAdmissions:
    """One `Admission` per model name, created on the first request for a listed name and
    kept across unloads (its counts are the model's, not a load's)."""

    def __init__(
        self,
        cap: int,
        floor: int,
        max_wait_s: float,
        listed: Callable[[str], bool],
        on_shed: Callable[[str, str], None],
        on_busy: Callable[[str, bool], None] | None = None,
    ) -> None:
        """`on_busy(name, True)` when a model's first request in flight enters, `(name, False)`
        when its last one leaves (the crash report's list)."""
        self.cap = cap
        self.listed = listed
        self.on_busy = on_busy
        self.floor = min(floor, cap)
        self.max_wait_s = max_wait_s
        self.on_shed = on_shed
        self._by_model: dict[str, Admission] = {}

    def of(self, name: str) -> Admission:
        """The model's admission (call only for a name the repository lists)."""
        admission = self._by_model.get(name)
        if admission is None:
            admission = self._by_model[name] = Admission(self.cap, self.floor, self.max_wait_s)
        return admission

    def refusal(self, name: str, admission: Admission) -> str:
        if admission.in_flight >= admission.limit:
            return (
                f"model '{name}' overloaded: {admission.limit} of its requests already in flight "
                f"({CAP_SETTING}); other models are still served; retry later"
            )
        return (
            f"model '{name}' overloaded: its requests wait {1000 * admission.waited_s:.0f} ms for it, more "
            f"than {1000 * admission.max_wait_s:.0f} ms (MSERVE_MAX_QUEUE_DELAY_MS plus the batching "
            "delay); other models are still served; retry later"
        )

    def enter(self, name: str, protocol: str) -> None:
        """Take a slot of `name` (a listed model), or Overloaded naming it and the setting."""
        admission = self.of(name)
        if not admission.try_enter():
            self.on_shed(name, protocol)
            raise Overloaded(self.refusal(name, admission))
        if admission.in_flight == 1 and self.on_busy is not None:
            self.on_busy(name, True)

    def leave(self, name: str) -> None:
        """Give back a slot `enter` took."""
        admission = self._by_model[name]
        admission.leave()
        if admission.in_flight == 0 and self.on_busy is not None:
            self.on_busy(name, False)

    def enter_url(self, method: bytes, url: bytes, scope: dict[str, Any]) -> str | None:
        """For the HTTP protocol, once a request's headers are parsed: take the slot of the model
        its URL names (marked in `scope`), or the refusal's message; None when it names none."""
        if method != b"POST":
            return None
        try:
            path = httptools.parse_url(url).path.decode("ascii")
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            return None  # uvicorn answers it
        name = model_of_inference("POST", urllib.parse.unquote(path) if "%" in path else path)
        if name is None or not self.listed(name):
            return None
        try:
            self.enter(name, "rest")
        except Overloaded as exc:
            return exc.message
        scope[MODEL_ADMITTED_KEY] = name
        return None

    def leave_scope(self, scope: dict[str, Any]) -> None:
        """Give back the slot `enter_url` took for this request, if it took one."""
        name = scope.pop(MODEL_ADMITTED_KEY, None)
        if name is not None:
            self.leave(name)

    @contextlib.contextmanager
    def holding(self, name: str) -> Iterator[None]:
        """A slot of `name` (a listed model) for the block, unless this request took it already."""
        held = _held.get()
        if held == name:
            yield
            return
        self.enter(name, "grpc" if held is None else "rest")
        try:
            yield
        finally:
            self.leave(name)


def model_of_inference(method: str, path: str) -> str | None:
    """The model a REST inference request names: V2 infer (with or without a version) or V1 predict."""
    if method != "POST":
        return None
    parts = path.split("/")
    v2 = parts[:3] == ["", "v2", "models"] and parts[-1] == "infer"
    if v2 and (len(parts) == 5 or (len(parts) == 7 and parts[4] == "versions")):
        return parts[3]
    if parts[:3] == ["", "v1", "models"] and len(parts) == 4 and parts[3].endswith(":predict"):
        return parts[3].removesuffix(":predict")
    return None


class PoolAdmissionMiddleware:
    """REST: the model's slot from the URL, before the body is read (taken here where the
    protocol did not decide, e.g. a pipelined request); past the model's cap (or its queue-delay
    bound) 503 + Retry-After naming the model and the setting. Outermost, so that the slot is
    given back whatever answers the request."""

    def __init__(self, app: Any, admissions: ModelAdmissions) -> None:
        self.app = app
        self.admissions = admissions

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        name = model_of_inference(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if name is None:
            await self.app(scope, receive, send)
            return
        if scope.get(MODEL_ADMITTED_KEY) == name:
            pass  # the protocol took the model's slot (rest_shedding.py)
        elif scope.get(ADMITTED_KEY) or not self.admissions.listed(name):
            # The protocol decided without a model slot (the name was not listed then): the
            # data plane takes it, if the name is listed by then.
            token = _held.set("")
            try:
                await self.app(scope, receive, send)
            finally:
                _held.reset(token)
            return
        else:
            try:
                self.admissions.enter(name, "rest")
            except Overloaded as exc:
                await send_error(send, 503, exc.message, [(b"retry-after", str(RETRY_AFTER_S).encode())])
                return
        token = _held.set(name)
        try:
            await self.app(scope, receive, send)
        finally:
            _held.reset(token)
            self.admissions.leave(name)
