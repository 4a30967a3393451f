"""Read-only http(s):// model sources, streamed.

Policy, so that a source cannot steer a pod at what the user could not reach themselves:
- credentials (a bearer token or basic auth, see `storage_roles`) go to the URI's own
  scheme, host and port only; a redirect elsewhere is followed without them;
- a redirect is followed only to https://, or to the same scheme, host and port as the
  URL it came from; never from https to http, never to file:// or another scheme; at most
  `MAX_REDIRECTS` in a row;
- a Content-Length over the size cap is refused before the body is read;
- error messages name the URI the user wrote and the cause, never an address the fetch
  was redirected to or resolved, nor a server's free text.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any
from urllib.parse import SplitResult, urljoin, urlsplit

from mserve_runtime.atomic_write import CHUNK_BYTES
from mserve_runtime.fetch_limits import ByteBudget
from mserve_runtime.storage_errors import FetchError
from mserve_runtime.storage_roles import Role, env_prefix, http_authorization

TIMEOUT_S = 30.0
MAX_REDIRECTS = 5
_HEADERS = {"User-Agent": "mserve-fetch"}
_HOSTNAME_MISMATCH = 62  # X509_V_ERR_HOSTNAME_MISMATCH


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    default_port = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default_port


class _RedirectRefusedError(Exception):
    """A redirect the policy refuses; the message is safe to show."""


class _RedirectPolicy(urllib.request.HTTPRedirectHandler):
    # urllib's own loop limits sit above ours, so that ours speaks first.
    max_repeats = max_redirections = MAX_REDIRECTS + 1

    def __init__(self, uri: str, authorization: str | None) -> None:
        super().__init__()
        self.origin = _origin(urlsplit(uri))
        self.authorization = authorization
        self.count = 0
        # Whether the request now goes to another origin than the URI's (which gets no credentials).
        self.left_origin = False

    def http_error_302(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location:
            try:
                self._check(urlsplit(req.full_url), urlsplit(urljoin(req.full_url, location)))
            except _RedirectRefusedError:
                fp.close()
                raise
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def _check(self, current: SplitResult, target: SplitResult) -> None:
        self.count += 1
        if self.count > MAX_REDIRECTS:
            raise _RedirectRefusedError(f"more than {MAX_REDIRECTS} redirects in a row")
        if target.scheme not in ("http", "https"):
            raise _RedirectRefusedError(f"refused a redirect to a {target.scheme or 'schemeless'}: URL")
        if target.scheme == "https" or _origin(target) == _origin(current):
            return
        if current.scheme == "https":
            raise _RedirectRefusedError("refused a redirect from https to http")
        raise _RedirectRefusedError(
            "refused a redirect to http on another host (only to https, or within one host)"
        )

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        self.left_origin = _origin(urlsplit(newurl)) != self.origin
        if new is not None and self.authorization and not self.left_origin:
            new.add_unredirected_header("Authorization", self.authorization)
        return new


class _Request:
    """One GET or HEAD of `uri` with the role's credentials and the redirect policy."""

    def __init__(self, uri: str, role: Role | None, method: str = "GET") -> None:
        parts = urlsplit(uri)
        if parts.username is not None or parts.password is not None:
            raise FetchError(
                _without_userinfo(parts),
                "credentials in the URI are not supported: give them in the source's Secret "
                "(keys username and password, or token)",
            )
        self.uri = uri
        self.role = role
        auth = http_authorization(uri, role)
        self.authorization, self.credentials_from = auth if auth else (None, None)
        self.policy = _RedirectPolicy(uri, self.authorization)
        self.request = urllib.request.Request(uri, headers=_HEADERS, method=method)
        if self.authorization:
            # Unredirected: urllib would otherwise copy it to any host a redirect names.
            self.request.add_unredirected_header("Authorization", self.authorization)

    def open(self) -> Any:
        opener = urllib.request.build_opener(self.policy)
        try:
            return opener.open(self.request, timeout=TIMEOUT_S)
        except _RedirectRefusedError as exc:
            raise FetchError(self.uri, str(exc)) from None
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                exc.close()  # its body is never read; free the connection now
            raise self.explain(exc) from exc

    def explain(self, exc: BaseException) -> FetchError:
        after = " (after a redirect)" if self.policy.count else ""
        if isinstance(exc, urllib.error.HTTPError):
            return FetchError(self.uri, self._status(exc.code) + after)
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return FetchError(self.uri, _network_cause(reason, self.uri if not after else None) + after)

    def _status(self, code: int) -> str:
        phrase = _phrase(code)
        if code != 401:
            return f"HTTP {code} {phrase}".rstrip()
        if self.policy.left_origin:
            return f"HTTP 401 {phrase}: credentials go only to the URI's own host, not where it redirected"
        if self.credentials_from:
            return f"HTTP 401 {phrase}: the server refused the credentials from {self.credentials_from}"
        prefix = env_prefix(self.role) if self.role else "MSERVE_SOURCE_"
        return (
            f"HTTP 401 {phrase}: no credentials were sent; give the source a Secret "
            f"({prefix}token, or {prefix}username and {prefix}password)"
        )


def _phrase(code: int) -> str:
    # The standard phrase, not the server's: a server's own text could say anything.
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""


def _without_userinfo(parts: SplitResult) -> str:
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def _network_cause(reason: object, uri: str | None) -> str:
    """A cause that names no address: `uri` is given only when the failing host is the user's own."""
    host = urlsplit(uri).hostname if uri else None
    if isinstance(reason, _RedirectRefusedError):
        return str(reason)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, socket.gaierror):
        return f"cannot resolve host {host!r}" if host else "cannot resolve the host"
    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {TIMEOUT_S:.0f}s"
    if isinstance(reason, ssl.SSLCertVerificationError):
        if reason.verify_code == _HOSTNAME_MISMATCH:
            return "TLS certificate does not match the host name"
        return f"TLS certificate not trusted: {reason.verify_message}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake failed ({reason.reason or 'unknown reason'})"
    if isinstance(reason, http.client.IncompleteRead):
        return f"connection closed after {len(reason.partial)} bytes, before the end"
    if isinstance(reason, http.client.RemoteDisconnected | ConnectionResetError):
        return "the server closed the connection without an answer"
    if isinstance(reason, OSError) and reason.strerror:
        return f"request failed: {reason.strerror}"
    return f"request failed ({type(reason).__name__})"


def body_chunks(uri: str, *, role: Role | None = None, budget: ByteBudget | None = None) -> Iterator[bytes]:
    request = _Request(uri, role)
    with request.open() as resp:
        declared = resp.headers.get("Content-Length")
        expected = int(declared) if declared and declared.isdigit() else None
        if budget is not None and expected is not None:
            budget.check_declared(expected, "the response (Content-Length)")
        received = 0
        while True:
            try:
                chunk = resp.read(CHUNK_BYTES)
            except (OSError, http.client.HTTPException) as exc:
                raise request.explain(exc) from exc
            if not chunk:
                break
            received += len(chunk)
            yield chunk
        if expected is not None and received != expected:
            raise FetchError(uri, f"connection closed after {received} of {expected} bytes")


def exists(uri: str, *, role: Role | None = None) -> bool:
    request = _Request(uri, role, method="HEAD")
    try:
        with request.open():
            return True
    except FetchError as exc:
        if isinstance(exc.__cause__, urllib.error.HTTPError) and exc.__cause__.code in (404, 410):
            return False
        raise
