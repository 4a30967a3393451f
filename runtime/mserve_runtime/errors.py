"""One error hierarchy for the runtime; each class carries the HTTP status it maps to.

The REST server maps these with one exception handler and the gRPC server maps the same
classes to gRPC codes, so a protocol adapter never decides a status code on its own.
"""

from __future__ import annotations


class MServeError(Exception):
    """Base of every error a client can be told about."""

    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """The request is malformed or does not match the model's inputs."""

    status_code = 400


class ModelNotFound(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """No model (or model version) of that name is served here."""

    status_code = 404


class RouteNotFound(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """No REST route has this path."""

    status_code = 404


class MethodNotAllowed(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """The path exists, not with this method; `allowed` lists the methods it has."""

    status_code = 405

    def __init__(self, message: str, allowed: str) -> None:
        super().__init__(message)
        self.allowed = allowed


class PayloadTooLarge(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """The request body exceeds `max_request_bytes` (or its JSON part `max_json_bytes`)."""

    status_code = 413


class ModelNotReady(MServeError):  # noqa: N818 (names shared with KServe/MLServer)
    """The model is still loading, failed, or the server is draining."""

    status_code = 503


class ServerError(MServeError):
    """Something failed on our side (e.g. onnxruntime raised while running a valid request)."""

    status_code = 500


class Unauthenticated(MServeError):  # noqa: N818 (the gRPC status of the same name)
    """No credential, or one this server does not accept (REST 401, gRPC UNAUTHENTICATED)."""

    status_code = 401


class PermissionDenied(MServeError):  # noqa: N818 (the gRPC status of the same name)
    """A valid credential whose owner may not call this model (REST 403, gRPC PERMISSION_DENIED)."""

    status_code = 403


class RateLimited(MServeError):  # noqa: N818 (reads like the others)
    """The caller's rate limit is spent; `retry_after_s` is when it may try again (REST 429)."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthUnavailable(MServeError):  # noqa: N818 (reads like the others)
    """The credential cannot be checked now (the Kubernetes API server is unreachable)."""

    status_code = 503


class ConfigError(Exception):
    """A setting that cannot work (a missing file, a bad certificate): start-up stops naming it."""


class ModelLoadError(Exception):
    """The model cannot be loaded; the process must exit non-zero with this reason."""


class Overloaded(MServeError):  # noqa: N818 (reads like the others)
    """More requests are in flight than the server admits (`max_in_flight`); retry later."""

    status_code = 503


class DeadlineExceeded(MServeError):  # noqa: N818 (the gRPC status of the same name)
    """The request's deadline passed before its model run started."""

    status_code = 504


class ClientGone(MServeError):  # noqa: N818 (reads like the others)
    """The client disconnected or cancelled while its request waited (nginx's 499)."""

    status_code = 499
