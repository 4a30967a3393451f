"""The V2 gRPC service of a pool server: the inference RPCs plus Triton's model repository
RPCs (RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload) over `PoolDataPlane`."""

from __future__ import annotations

import grpc
from typing_extensions import override  # typing.override from Python 3.12

from mserve_runtime.errors import InvalidInput
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.server import InferenceServicer, _abort
from mserve_runtime.pool_dataplane import PoolDataPlane
from mserve_runtime.pool_routes import ACCEPTED_PARAMETERS
from mserve_runtime.request_limits import RequestLimits


def _check(repository_name: str, parameters: object = None) -> None:
    if repository_name:
        raise InvalidInput(
            f"repository_name {repository_name[:100]!r}: this server has one repository; leave it empty"
        )
    unknown = sorted(set(parameters or ()) - ACCEPTED_PARAMETERS)  # type: ignore[call-overload]
    if unknown:
        raise InvalidInput(f"parameters are not supported here (received: {', '.join(unknown[:5])[:200]})")


class PoolInferenceServicer(InferenceServicer):
    def __init__(self, pool: PoolDataPlane, limits: RequestLimits) -> None:
        super().__init__(pool, limits)  # type: ignore[arg-type]
        self.pool = pool

    @override
    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        # The metadata comes from the loaded session: load it first (waiting, bounded), as REST does.
        try:
            await self.pool.ensure_loaded(request.name)
        except Exception as error:
            await _abort(context, error)
        return await super().ModelMetadata(request, context)

    @override
    async def RepositoryIndex(
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        try:
            _check(request.repository_name)
            rows = self.pool.index(ready_only=request.ready)
        except Exception as error:
            await _abort(context, error)
        models = [
            pb.RepositoryIndexResponse.ModelIndex(
                name=r["name"], version=r["version"], state=r["state"], reason=r["reason"]
            )
            for r in rows
        ]
        return pb.RepositoryIndexResponse(models=models)

    @override
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        try:
            _check(request.repository_name, request.parameters)
            await self.pool.load_model(request.model_name)
        except Exception as error:
            await _abort(context, error)
        return pb.RepositoryModelLoadResponse()

    @override
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        try:
            _check(request.repository_name, request.parameters)
            await self.pool.unload_model(request.model_name)
        except Exception as error:
            await _abort(context, error)
        return pb.RepositoryModelUnloadResponse()
