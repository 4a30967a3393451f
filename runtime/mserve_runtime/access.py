"""Who may call the model, how often, and what they used: the protocol-agnostic part.

`Access.admit(authorization, api_key)` takes the two credential headers (REST headers or
gRPC metadata, as bytes) and returns the caller's name, the label its usage is counted
under: a key name (`<secret>/<file>`), `sa:<namespace>/<name>`, or `anonymous`. It raises
Unauthenticated (401), PermissionDenied (403), AuthUnavailable (503) or RateLimited (429).
Each protocol hooks in once, before the body is read: `access_middleware.py` for REST,
`grpc_v2/access.py` for gRPC. Health routes never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from mserve_runtime.auth_keys import ApiKeys
from mserve_runtime.auth_tokenreview import KubeAccess, TokenReviewer
from mserve_runtime.errors import PermissionDenied, RateLimited, Unauthenticated
from mserve_runtime.rate_limit import RateLimiter, retry_after_s
from mserve_runtime.settings import RuntimeSettings, parse_service_accounts
from mserve_runtime.usage_metrics import UsageMetrics

log = logging.getLogger("mserve.auth")

ANONYMOUS = "anonymous"
# Longer credentials are refused before any work: no key is this long, and no one should
# make the server hash (or send the API server) megabytes.
MAX_CREDENTIAL_BYTES = 8192
POLL_S = 2.0


def _shown(value: bytes) -> str:
    text = value[:20].decode("latin-1")
    return text if text.isascii() and text.isprintable() else "(not printable)"


def credential(authorization: bytes | None, api_key: bytes | None, what: str) -> bytes:
    """The credential a request carries: `Authorization: Bearer <it>` or `X-API-Key: <it>`."""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(b" ")
        if scheme.lower() != b"bearer":
            raise Unauthenticated(
                f"the Authorization header must be 'Bearer <{what}>' (received scheme '{_shown(scheme)}')"
            )
        value = value.strip()
        if not value:
            raise Unauthenticated(f"the Authorization header holds 'Bearer' with no {what}")
    elif api_key is not None:
        value = api_key.strip()
        if not value:
            raise Unauthenticated("the X-API-Key header is empty")
    else:
        raise Unauthenticated(f"no credential: send 'Authorization: Bearer <{what}>' (or 'X-API-Key: <key>')")
    if len(value) > MAX_CREDENTIAL_BYTES:
        raise Unauthenticated(f"the credential is longer than {MAX_CREDENTIAL_BYTES} bytes")
    return value


class Access:
    """Authentication (none, apiKey, kubernetes), a rate limit per caller, and usage counters."""

    def __init__(self, settings: RuntimeSettings, usage: UsageMetrics) -> None:
        self.mode = settings.auth
        self.usage = usage
        self.keys: ApiKeys | None = None
        self.reviewer: TokenReviewer | None = None
        self.allowed: frozenset[str] = frozenset()
        if self.mode == "apiKey":
            self.keys = ApiKeys(Path(settings.api_keys_dir))
        elif self.mode == "kubernetes":
            kube = KubeAccess.from_settings(
                settings.kube_api_url, settings.kube_token_file, settings.kube_ca_file
            )
            self.reviewer = TokenReviewer(kube, settings.token_audience)
            self.allowed = frozenset(parse_service_accounts(settings.allowed_service_accounts))
            if not self.allowed:
                log.warning("MSERVE_ALLOWED_SERVICE_ACCOUNTS is empty: every caller gets 403")
        self.limiter = (
            RateLimiter(settings.rate_limit_rps, settings.rate_limit_burst)
            if settings.rate_limit_rps
            else None
        )
        self.checks = self.mode != "none" or self.limiter is not None
        self._watch: asyncio.Task[None] | None = None

    def describe(self) -> str:
        limit = f"{self.limiter.rate:g}/s burst {self.limiter.burst} per caller" if self.limiter else "off"
        who = {"none": "none", "apiKey": "API keys", "kubernetes": "ServiceAccount tokens"}[self.mode]
        return f"authentication {who}, rate limit {limit}"

    async def admit(self, authorization: bytes | None, api_key: bytes | None) -> str:
        """The caller's name if it may go now; else the error to answer with."""
        if self.reviewer is None:
            return self.admit_now(authorization, api_key)
        account = await self.reviewer.review(credential(authorization, api_key, "ServiceAccount token"))
        if account not in self.allowed and f"{account.partition('/')[0]}/*" not in self.allowed:
            raise PermissionDenied(f"ServiceAccount '{account}' may not call this model")
        return self._limit(f"sa:{account}")

    def admit_now(self, authorization: bytes | None, api_key: bytes | None) -> str:
        """`admit` without awaiting, for the modes that need no API server (none, apiKey)."""
        keys = self.keys
        if keys is None:
            return self._limit(ANONYMOUS) if self.limiter is not None else ANONYMOUS
        caller = keys.match(credential(authorization, api_key, "API key"))
        if caller is None:
            if not keys.table:
                raise PermissionDenied("invalid API key: this server has no API keys configured")
            # A key was presented and is not one of ours: refused (403), not missing (401).
            raise PermissionDenied("invalid API key")
        return self._limit(caller) if self.limiter is not None else caller

    def _limit(self, caller: str) -> str:
        if self.limiter is not None:
            wait = self.limiter.wait_s(caller)
            if wait:
                after = retry_after_s(wait)
                raise RateLimited(
                    f"rate limit of {self.limiter.rate:g} requests/s (burst {self.limiter.burst}) "
                    f"exceeded for '{caller}'; retry in {after} s",
                    after,
                )
        return caller

    # -- lifecycle: the key directory is re-read while serving --

    def start(self) -> None:
        if self.keys is not None and self._watch is None:
            self._watch = asyncio.get_running_loop().create_task(self._poll_keys(self.keys))

    async def _poll_keys(self, keys: ApiKeys) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await asyncio.to_thread(keys.reload)
            except Exception:
                log.exception("re-reading the API keys failed; keeping the previous ones")

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.reviewer is not None:
            await self.reviewer.close()


def error_headers(error: Exception) -> list[tuple[bytes, bytes]]:
    """The REST headers that go with an access error (WWW-Authenticate, Retry-After)."""
    if isinstance(error, Unauthenticated):
        return [(b"www-authenticate", b'Bearer realm="mserve"')]
    if isinstance(error, RateLimited):
        return [(b"retry-after", str(error.retry_after_s).encode())]
    return []
