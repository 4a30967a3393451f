"""Fixtures shared by the runtime tests."""

from storage_servers import http_server, moto_endpoint, mserve, s3  # noqa: F401
