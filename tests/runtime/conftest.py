"""Fixtures shared by the runtime tests."""

from fixtures_models import (  # noqa: F401
    datatypes_model,
    datatypes_server,
    digits,
    digits_server,
    fixed_batch_model,
    model_dir,
    tiny_mlp,
)
from storage_servers import http_server, https_server, mserve, other_http_server  # noqa: F401

from tests.support.s3_store import moto_endpoint, s3  # noqa: F401
