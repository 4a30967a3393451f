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
from storage_servers import (  # noqa: F401
    http_server,
    https_server,
    moto_endpoint,
    mserve,
    other_http_server,
    s3,
)
