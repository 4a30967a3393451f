"""Closed label sets: requests naming random, huge model names cannot grow /metrics."""

from __future__ import annotations

import contextlib
import random
import string
from pathlib import Path

import grpc
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc

from tests.support.models import DigitsModel
from tests.support.ports import free_port
from tests.support.serving import serving

GOOD = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]}


def _names(count: int, rng: random.Random) -> list[str]:
    """Short random names and multi-KiB ones (URL-safe, so that REST routes them to infer)."""
    alphabet = string.ascii_letters + string.digits + "-_."
    return ["".join(rng.choices(alphabet, k=rng.choice((8, 40, 4096, 16384)))) for _ in range(count)]


def test_random_model_names_over_rest_and_grpc_leave_metrics_small(
    digits: DigitsModel, tmp_path: Path
) -> None:
    rng = random.Random(9)
    grpc_port = free_port()
    args = ("--grpc-port", str(grpc_port))
    with serving(digits.path, "digits", tmp_path / "mserve.log", *args) as server, server.client() as http:
        # Every label combination the served model can reach, so that only a leak adds lines.
        http.post("/v2/models/digits/infer", json=GOOD)
        http.post("/v2/models/nope/infer", json=GOOD)
        http.post("/v1/models/nope:predict", json={"instances": [[0.5] * 64]})
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for name in ("digits", "nope"):
                with contextlib.suppress(grpc.RpcError):
                    stub.ModelInfer(pb.ModelInferRequest(model_name=name), timeout=10)
        baseline = server.metrics()

        statuses = set()
        for name in _names(150, rng):
            statuses.add(http.post(f"/v2/models/{name}/infer", json=GOOD).status_code)
            statuses.add(http.post(f"/v2/models/{name}/versions/{name[:9]}/infer", json=GOOD).status_code)
            statuses.add(http.post(f"/v1/models/{name}:predict", json={"instances": []}).status_code)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for name in [*_names(150, rng), "x" * (1 << 20)]:
                try:
                    stub.ModelInfer(pb.ModelInferRequest(model_name=name, model_version=name), timeout=10)
                except grpc.RpcError as exc:
                    statuses.add(exc.code().name)
        flooded = server.metrics()
        assert http.get("/v2/health/live").status_code == 200

    assert statuses <= {404, "NOT_FOUND"}, statuses
    new_lines = set(flooded.splitlines()) - set(baseline.splitlines())
    # Only counter values move; no series is added.
    assert len(flooded.splitlines()) == len(baseline.splitlines()), sorted(new_lines)[:5]
    assert len(flooded) < 2 * len(baseline) < 200_000
    assert 'model="_unknown",protocol="grpc",status="NOT_FOUND"' in flooded
