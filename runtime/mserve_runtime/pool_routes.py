"""REST of a pool server: the V2 model repository extension, and loading before the
routes that read a model's metadata synchronously.

`POST /v2/repository/index` (`{"ready": true}` for loaded models only),
`POST /v2/repository/models/{name}/load` and `.../unload` (Triton's paths). Bodies are
optional JSON objects; unknown keys are refused so that a typo does not pass silently.
"""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, RootModel, ValidationError

from mserve_runtime.errors import InvalidInput, MServeError
from mserve_runtime.pool_dataplane import PoolDataPlane
from mserve_runtime.rest_app import error_response, send_response
from mserve_runtime.rest_models import ErrorBody
from mserve_runtime.rest_routes import RestRequest, RestResponse, RestRoute


class RepositoryIndexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ready: bool = False


class RepositoryModelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    parameters: dict[str, Any] | None = None


class RepositoryIndexEntry(BaseModel):
    name: str
    version: str
    state: str
    reason: str
    memory_bytes: int


class RepositoryIndexResponse(RootModel[list[RepositoryIndexEntry]]):
    pass


_ERRORS: dict[int, type[BaseModel] | None] = {400: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody}


M = TypeVar("M", bound=BaseModel)


def _parse(body: bytes | bytearray, model: type[M]) -> M:
    if not body.strip():
        return model()
    try:
        return model.model_validate(orjson.loads(body))
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"malformed JSON in the request body: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid request body: {problems}"[:500]) from None


# tritonclient sends `unload_dependents` with every unload; there are no ensembles here, so it
# changes nothing. Other parameters (a config, files to write) are refused, not ignored.
ACCEPTED_PARAMETERS = frozenset({"unload_dependents"})


def _no_parameters(request: RepositoryModelRequest) -> None:
    unknown = sorted(set(request.parameters or ()) - ACCEPTED_PARAMETERS)
    if unknown:
        raise InvalidInput(f"parameters are not supported here (received: {', '.join(unknown[:5])[:200]})")


def build_repository_routes(pool: PoolDataPlane) -> list[RestRoute]:
    async def index(req: RestRequest) -> RestResponse:
        ready = _parse(req.body, RepositoryIndexRequest).ready
        return RestResponse(orjson.dumps(pool.index(ready_only=ready)))

    async def load(req: RestRequest) -> RestResponse:
        _no_parameters(_parse(req.body, RepositoryModelRequest))
        await pool.load_model(req.params["model_name"])
        return RestResponse(b"{}")

    async def unload(req: RestRequest) -> RestResponse:
        _no_parameters(_parse(req.body, RepositoryModelRequest))
        await pool.unload_model(req.params["model_name"])
        return RestResponse(b"{}")

    prefix = "/v2/repository"
    return [
        RestRoute(
            "POST",
            f"{prefix}/index",
            index,
            "repository_index",
            "repository",
            {200: RepositoryIndexResponse, 400: ErrorBody},
            request_body=RepositoryIndexRequest,
        ),
        RestRoute(
            "POST",
            f"{prefix}/models/{{model_name}}/load",
            load,
            "repository_model_load",
            "repository",
            {200: None, **_ERRORS},
            request_body=RepositoryModelRequest,
        ),
        RestRoute(
            "POST",
            f"{prefix}/models/{{model_name}}/unload",
            unload,
            "repository_model_unload",
            "repository",
            {200: None, **_ERRORS},
            request_body=RepositoryModelRequest,
        ),
    ]


def _model_to_load(method: str, path: str) -> str | None:
    """The model a metadata read or a V1 predict names (those read metadata without waiting)."""
    parts = path.split("/")
    metadata = len(parts) == 4 or (len(parts) == 6 and parts[4] == "versions")
    if method == "GET" and parts[:3] == ["", "v2", "models"] and metadata:
        return parts[3]
    if (
        method == "POST"
        and parts[:3] == ["", "v1", "models"]
        and len(parts) == 4
        and parts[3].endswith(":predict")
    ):
        return parts[3].removesuffix(":predict")
    return None


class PoolLoadMiddleware:
    """Loads (waiting, bounded) the model of a metadata GET or V1 predict before its route
    runs; a model that cannot load is answered here with the error naming it."""

    def __init__(self, app: Any, pool: PoolDataPlane) -> None:
        self.app = app
        self.pool = pool

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (name := _model_to_load(scope["method"], scope["path"])):
            try:
                await self.pool.ensure_loaded(name)
            except MServeError as exc:
                await send_response(send, error_response(exc))
                return
        await self.app(scope, receive, send)
