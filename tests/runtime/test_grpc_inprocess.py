"""The gRPC server started in-process over a DataPlane: readiness before load and while draining,
and start-up failures. (tritonclient and the server share this process on purpose: their
`inference.*` protobuf messages must not collide.)"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
import tritonclient.grpc as triton
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.grpc_v2.server import GrpcServerHandle, start_grpc_server
from mserve_runtime.settings import RuntimeSettings
from tritonclient.utils import InferenceServerException

from tests.support.models import DigitsModel

T = TypeVar("T")


class LoopThread:
    """An asyncio loop on its own thread, so blocking clients can call the server it runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


Served = tuple[GrpcServerHandle, triton.InferenceServerClient]


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def dataplane(digits: DigitsModel) -> DataPlane:
    return DataPlane(RuntimeSettings(model_path=str(digits.path), model_name="digits", threads=1))


@pytest.fixture
def served(loop_thread: LoopThread, dataplane: DataPlane) -> Iterator[Served]:
    handle = loop_thread.run(start_grpc_server(dataplane, 0, max_message_bytes=1 << 20, host="127.0.0.1"))
    client = triton.InferenceServerClient(f"127.0.0.1:{handle.port}")
    yield handle, client
    client.close()
    loop_thread.run(handle.stop(0))
    loop_thread.run(dataplane.close())


def infer(client: triton.InferenceServerClient) -> triton.InferResult:
    tensor = triton.InferInput("x", [1, 64], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 64), dtype=np.float32))
    return client.infer("digits", [tensor])


def test_live_but_not_ready_while_the_model_loads(served: tuple) -> None:
    _, client = served

    assert client.is_server_live()
    assert not client.is_server_ready()
    assert not client.is_model_ready("digits")
    with pytest.raises(InferenceServerException) as caught:
        infer(client)
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "model 'digits' is still loading" in caught.value.message()


def test_ready_after_load_and_not_ready_while_draining(served: tuple, dataplane: DataPlane) -> None:
    _, client = served
    dataplane.load()

    assert client.is_server_ready()
    assert client.is_model_ready("digits")
    assert infer(client).as_numpy("logits").shape == (1, 10)

    dataplane.start_draining()

    assert client.is_server_live()
    assert not client.is_server_ready()
    assert not client.is_model_ready("digits")
    # In-flight and late requests still finish during the drain.
    assert infer(client).as_numpy("logits").shape == (1, 10)


def test_a_taken_port_fails_to_start(loop_thread: LoopThread, dataplane: DataPlane) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(OSError, match=f"cannot listen for gRPC on 127.0.0.1:{port}"):
            loop_thread.run(start_grpc_server(dataplane, port, max_message_bytes=1 << 20, host="127.0.0.1"))


def test_every_call_is_access_logged_with_its_status(
    served: Served, dataplane: DataPlane, caplog: pytest.LogCaptureFixture
) -> None:
    _, client = served
    dataplane.load()
    caplog.set_level(logging.INFO, logger="mserve.access")

    infer(client)
    with pytest.raises(InferenceServerException):
        client.is_model_ready("nope")

    # The client may see the error status before the server has written the log record.
    deadline = time.monotonic() + 5
    while len(records := [r for r in caplog.records if r.name == "mserve.access"]) < 2:
        assert time.monotonic() < deadline, records
        time.sleep(0.01)
    assert [(r.path, r.status) for r in records] == [
        ("/inference.GRPCInferenceService/ModelInfer", "OK"),
        ("/inference.GRPCInferenceService/ModelReady", "NOT_FOUND"),
    ]
    assert records[0].client == "127.0.0.1"
    assert records[0].duration_ms > 0
