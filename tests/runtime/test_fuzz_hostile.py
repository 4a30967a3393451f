"""Hypothesis fuzzes inference requests aimed at the decoders, over REST and gRPC.

Schemathesis (test_fuzz.py) covers every route from the OpenAPI document; its examples
rarely reach the shapes that hurt (65 dimensions, a zero beside 2**62, data nested a
thousand deep). These strategies aim there on purpose, for both protocols, against one
real server: never a 5xx / INTERNAL, the process alive, its peak memory bounded.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import DigitsModel
from mserve_runtime.datatypes import V2_TO_NUMPY
from mserve_runtime.grpc_v2.codec import TYPED_FIELD
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2 as pb
from mserve_runtime.grpc_v2.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from served import Server, free_port, serving

EXAMPLES = 150
# Peak RSS may grow this much over the whole run: the limits below bound one request to far less.
RSS_GROWTH_BOUND = 400 << 20
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))

DATATYPES = st.sampled_from([*V2_TO_NUMPY, "BF16", "FP8", ""])
HUGE = [1 << 31, 1 << 40, 1 << 62, (1 << 63) - 1]
DIMS = st.one_of(st.integers(-3, 4), st.sampled_from(HUGE))
SHAPES = st.one_of(
    st.just([1, 64]),
    st.lists(st.integers(0, 4), max_size=4),
    st.lists(DIMS, max_size=6),
    st.lists(DIMS, max_size=3).map(lambda dims: [0, *dims]),  # a zero beside huge dimensions
    st.lists(st.integers(0, 2), min_size=60, max_size=70),  # around numpy's 64 dimensions
    st.lists(st.just(1), min_size=63, max_size=66),
)
LEAVES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(1 << 70), 1 << 70),
    st.text(max_size=4),
    st.booleans(),
    st.none(),
)


def _matching_count(shape: list[int]) -> int | None:
    """The element count of a shape small enough to send data for (the fuzzer's way past the
    consistency checks, to what lies behind them)."""
    count = 1
    for dim in shape:
        count *= dim
    return count if 0 <= count <= 100 else None


def _nest(depth: int, leaf: Any = "a") -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


JSON_DATA = st.one_of(
    st.just([0.5] * 64),
    st.lists(LEAVES, max_size=80),
    st.recursive(LEAVES, lambda children: st.lists(children, max_size=3), max_leaves=20),
    st.builds(_nest, st.integers(1, 1000), LEAVES),
)


def _rss_peak(pid: int) -> tuple[int, int]:
    """(current, peak) resident bytes of a process, from /proc."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) << 10, int(fields["VmHWM"].split()[0]) << 10


class Target:
    def __init__(self, server: Server, grpc_port: int) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = pb_grpc.GRPCInferenceServiceStub(self.channel)
        self.rss_before = _rss_peak(server.proc.pid)[0]

    def check_alive_and_bounded(self) -> None:
        assert self.server.alive(), self.server.logs()[-3000:]
        _, peak = _rss_peak(self.server.proc.pid)
        assert peak - self.rss_before < RSS_GROWTH_BOUND, (
            f"peak RSS grew {(peak - self.rss_before) >> 20} MiB"
        )


@pytest.fixture(scope="module")
def target(digits: DigitsModel, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    log = tmp_path_factory.mktemp("fuzz-hostile") / "mserve.log"
    grpc_port = free_port()
    args = ("--grpc-port", str(grpc_port), "--max-batch-size", "8", "--max-batch-delay-ms", "1")
    env = {"MSERVE_MEMORY_LIMIT_BYTES": str(1 << 30)}  # the limits of a 1 GiB pod
    with serving(digits.path, "digits", log, *args, "--no-access-log", env=env) as server:
        made = Target(server, grpc_port)
        yield made
        made.http.close()
        made.channel.close()
        assert "Traceback" not in server.logs()


def _dumps(doc: Any) -> bytes:
    # The standard library's encoder: it writes integers past 64 bits, which orjson refuses.
    return json.dumps(doc).encode()


@st.composite
def rest_bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    tensor: dict[str, Any] = {
        "name": draw(st.sampled_from(["x", "y", ""])),
        "datatype": draw(DATATYPES),
        "shape": draw(st.one_of(SHAPES, st.lists(st.integers(-(1 << 70), 1 << 70), max_size=3))),
    }
    count = _matching_count(tensor["shape"])
    if count is not None and draw(st.booleans()):
        tensor["data"] = [draw(LEAVES)] * count
        return _dumps({"inputs": [tensor]}), {}
    if draw(st.booleans()):
        tensor["data"] = draw(JSON_DATA)
        return _dumps({"inputs": [tensor] * draw(st.integers(1, 2))}), {}
    raw = draw(st.one_of(st.just(b"\0" * 256), st.binary(max_size=300)))
    tensor["parameters"] = {"binary_data_size": draw(st.one_of(st.just(len(raw)), st.integers(-5, 1 << 40)))}
    header = _dumps({"inputs": [tensor]})
    length = draw(st.one_of(st.just(len(header)), st.integers(-5, len(header) + 400)))
    return header + raw, {"Inference-Header-Content-Length": str(length)}


def test_rest_fuzzing_finds_no_server_error(target: Target) -> None:
    @FUZZ
    @given(request=rest_bodies(), model=st.sampled_from(["digits", "digits", "nosuch"]))
    def fuzz(request: tuple[bytes, dict[str, str]], model: str) -> None:
        body, headers = request
        response = target.http.post(f"/v2/models/{model}/infer", content=body, headers=headers)
        assert response.status_code < 500, f"{body[:300]!r}: {response.text[:300]}"
        assert "error" in response.json() or response.status_code == 200

    fuzz()
    target.check_alive_and_bounded()


def _typed_values(field: str, count: int | None = None) -> st.SearchStrategy[list[Any]]:
    sizes: dict[str, Any] = {"max_size": 80} if count is None else {"min_size": count, "max_size": count}
    if field in ("fp32_contents", "fp64_contents"):
        return st.lists(st.floats(width=32 if field == "fp32_contents" else 64), **sizes)
    if field == "bool_contents":
        return st.lists(st.booleans(), **sizes)
    if field == "bytes_contents":
        return st.lists(st.binary(max_size=8), **sizes)
    bits = 64 if "64" in field else 32
    low = 0 if field.startswith("uint") else -(1 << (bits - 1))
    high = (1 << bits) - 1 if field.startswith("uint") else (1 << (bits - 1)) - 1
    return st.lists(st.integers(low, high), **sizes)


@st.composite
def grpc_requests(draw: st.DrawFn) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=draw(st.sampled_from(["digits", "digits", "nosuch", ""])))
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 2))):
        shape = draw(st.one_of(SHAPES, st.lists(st.integers(-(1 << 63), (1 << 63) - 1), max_size=3)))
        tensor = request.inputs.add(
            name=draw(st.sampled_from(["x", "y"])), datatype=draw(DATATYPES), shape=shape
        )
        count = _matching_count(shape)
        matching = count is not None and draw(st.booleans())
        field = TYPED_FIELD.get(tensor.datatype, "fp32_contents")
        if raw:
            size = V2_TO_NUMPY[tensor.datatype].itemsize if tensor.datatype in V2_TO_NUMPY else 4
            some = st.one_of(st.just(b"\0" * 256), st.binary(max_size=300))
            request.raw_input_contents.append(b"\0" * (size * count) if matching else draw(some))
        elif matching:
            getattr(tensor.contents, field).extend(draw(_typed_values(field, count)))
        else:
            field = draw(st.sampled_from(sorted(set(TYPED_FIELD.values()))))
            getattr(tensor.contents, field).extend(draw(_typed_values(field)))
    if raw and draw(st.booleans()):
        request.raw_input_contents.append(struct.pack("<I", 7))  # one entry too many
    return request


def test_grpc_fuzzing_finds_no_server_error(target: Target) -> None:
    @FUZZ
    @given(request=grpc_requests())
    def fuzz(request: pb.ModelInferRequest) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            target.stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as error:
            code, details = error.code(), error.details()
        assert code not in SERVER_ERRORS, f"{str(request)[:500]}: {code} {details}"

    fuzz()
    target.check_alive_and_bounded()
