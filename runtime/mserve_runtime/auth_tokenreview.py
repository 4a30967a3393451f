"""Kubernetes ServiceAccount tokens, checked with a TokenReview (what kube-rbac-proxy does).

The runtime posts the caller's token to the API server with its own ServiceAccount's
credential, bound to `MSERVE_TOKEN_AUDIENCE`; the answer names the ServiceAccount. Answers
are cached briefly by the token's SHA-256 (never the token), concurrent checks of one token
share one review, and an API server that cannot answer is a 503, never a pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from mserve_runtime.auth_keys import digest
from mserve_runtime.errors import (
    AuthUnavailable,
    ConfigError,
    MServeError,
    PermissionDenied,
    Unauthenticated,
)

log = logging.getLogger("mserve.auth")

REVIEW_PATH = "/apis/authentication.k8s.io/v1/tokenreviews"
_SA_PREFIX = "system:serviceaccount:"
POSITIVE_TTL_S = 10.0
NEGATIVE_TTL_S = 2.0
MAX_CACHED = 4096
TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class KubeAccess:
    """Where the API server is and the runtime's own credential for it."""

    url: str
    token_file: Path
    ca_file: Path | None

    @classmethod
    def from_settings(cls, url: str, token_file: str, ca_file: str) -> KubeAccess:
        """Check what can be checked at start-up; ConfigError naming the setting otherwise."""
        if not url:
            host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
            if not host or not port:
                raise ConfigError(
                    "MSERVE_AUTH=kubernetes needs the API server: set MSERVE_KUBE_API_URL "
                    "(outside a pod KUBERNETES_SERVICE_HOST/PORT are not set)"
                )
            url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
        token = Path(token_file)
        if not token.is_file():
            raise ConfigError(
                f"MSERVE_KUBE_TOKEN_FILE {token_file!r} is not a readable file: the runtime needs its "
                "ServiceAccount token to create TokenReviews"
            )
        ca = Path(ca_file) if url.startswith("https://") else None
        if ca is not None:
            try:
                ssl.create_default_context(cafile=str(ca))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"MSERVE_KUBE_CA_FILE {ca_file!r} cannot be loaded: {exc}") from None
        return cls(url, token, ca)


class TokenReviewer:
    """`review(token)` -> `namespace/name` of the ServiceAccount, or an MServeError."""

    def __init__(self, kube: KubeAccess, audience: str) -> None:
        self.kube = kube
        self.audience = audience
        self._cache: dict[bytes, tuple[float, str | MServeError]] = {}
        self._pending: dict[bytes, asyncio.Future[str]] = {}
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: ssl.SSLContext | bool = (
                ssl.create_default_context(cafile=str(self.kube.ca_file)) if self.kube.ca_file else False
            )
            self._client = httpx.AsyncClient(base_url=self.kube.url, verify=verify, timeout=TIMEOUT_S)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def review(self, token: bytes) -> str:
        key = digest(token)
        cached = self._cache.get(key)
        if cached is not None and cached[0] > time.monotonic():
            if isinstance(cached[1], MServeError):
                raise cached[1]
            return cached[1]
        pending = self._pending.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            answer: str | MServeError = await self._ask(token)
        except AuthUnavailable as exc:  # not cached: the next request asks again
            answer = exc
        except Exception as exc:
            log.exception("TokenReview failed")
            answer = AuthUnavailable(f"cannot check the token now: {type(exc).__name__}")
        except BaseException:
            future.cancel()  # cancelled: whoever shares this review sees it cancelled too
            raise
        else:
            self._remember(key, answer)
        finally:
            del self._pending[key]
        if isinstance(answer, MServeError):
            future.set_exception(answer)
            future.exception()  # retrieved: no "never retrieved" warning when no one else waits
            raise answer
        future.set_result(answer)
        return answer

    def _remember(self, key: bytes, answer: str | MServeError) -> None:
        now = time.monotonic()
        if len(self._cache) >= MAX_CACHED:
            for old in [k for k, (expires, _) in self._cache.items() if expires <= now]:
                del self._cache[old]
            while len(self._cache) >= MAX_CACHED:
                del self._cache[next(iter(self._cache))]
        ttl = NEGATIVE_TTL_S if isinstance(answer, MServeError) else POSITIVE_TTL_S
        self._cache[key] = (now + ttl, answer)

    async def _ask(self, token: bytes) -> str | MServeError:
        """The ServiceAccount, or the error to answer the caller with (AuthUnavailable raised)."""
        try:
            own = self.kube.token_file.read_text().strip()
        except OSError as exc:
            log.warning("cannot read MSERVE_KUBE_TOKEN_FILE %s: %s", self.kube.token_file, exc.strerror)
            raise AuthUnavailable("cannot check the token now: the server lacks its own credential") from None
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token.decode("latin-1"), "audiences": [self.audience]},
        }
        try:
            response = await self._http().post(
                REVIEW_PATH, json=body, headers={"Authorization": f"Bearer {own}"}
            )
        except httpx.HTTPError as exc:
            log.warning("TokenReview failed: %s: %s", type(exc).__name__, exc)
            raise AuthUnavailable(
                f"cannot check the token now: the Kubernetes API server is unreachable ({type(exc).__name__})"
            ) from None
        if response.status_code not in (200, 201):
            log.warning(
                "TokenReview refused: HTTP %d %s (the runtime's ServiceAccount needs permission to "
                "create tokenreviews, e.g. the system:auth-delegator ClusterRole)",
                response.status_code,
                response.text[:300],
            )
            raise AuthUnavailable(
                f"cannot check the token now: the Kubernetes API server answered HTTP {response.status_code}"
            )
        try:
            status = response.json().get("status") or {}
        except ValueError:
            raise AuthUnavailable("cannot check the token now: the API server's answer is not JSON") from None
        audiences = status.get("audiences") or []
        if not status.get("authenticated") or self.audience not in audiences:
            log.debug("token not authenticated: %s", str(status.get("error", ""))[:300])
            return Unauthenticated(
                f"invalid token: not a valid Kubernetes token for audience '{self.audience}' "
                "(or expired, or revoked)"
            )
        username = str((status.get("user") or {}).get("username", ""))
        namespace, _, name = username.removeprefix(_SA_PREFIX).partition(":")
        if not username.startswith(_SA_PREFIX) or not namespace or not name:
            return PermissionDenied(
                f"only ServiceAccount tokens may call this model (this token is user {username[:100]!r})"
            )
        return f"{namespace}/{name}"
