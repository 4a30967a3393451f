"""Graceful drain over gRPC: requests in flight when SIGTERM arrives all get their answers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as triton

from tests.support.models import DigitsModel
from tests.support.serving import serving


def test_in_flight_grpc_requests_finish_during_sigterm(digits: DigitsModel, tmp_path: Path) -> None:
    model = digits.path
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(i).random((1, 64), dtype=np.float32) for i in range(8)]
    results: dict[int, np.ndarray | Exception] = {}

    def call(index: int, url: str) -> None:
        client = triton.InferenceServerClient(url)
        tensor = triton.InferInput("x", [1, 64], "FP32")
        tensor.set_data_from_numpy(inputs[index])
        try:
            results[index] = client.infer("digits", [tensor], client_timeout=30).as_numpy("logits")
        except Exception as exc:
            results[index] = exc
        finally:
            client.close()

    # A long batching delay keeps the requests waiting in the server when the signal arrives.
    with serving(
        model, "digits", tmp_path / "mserve.log", "--threads", "1", "--max-batch-size", "64",
        "--max-batch-delay-ms", "1500", grpc=True,
    ) as served:  # fmt: skip
        threads = [threading.Thread(target=call, args=(i, served.grpc_url)) for i in range(len(inputs))]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        served.proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(30)
        exit_code = served.proc.wait(30)

    assert exit_code == 0, served.logs()
    for index, x in enumerate(inputs):
        result = results[index]
        assert not isinstance(result, Exception), f"request {index} failed: {result}\n{served.logs()}"
        np.testing.assert_allclose(result, session.run(["logits"], {"x": x})[0], rtol=1e-6)
