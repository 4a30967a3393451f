"""Dynamic batching in a real server: concurrent requests merge, answers split back correctly."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support.models import build_scale_model
from tests.support.serving import Server, serving


def _infer(url: str, model: str, x: np.ndarray) -> np.ndarray:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]}
    r = httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    return np.array(out["data"], dtype=np.float32).reshape(out["shape"])


def _histogram(metrics: str, name: str) -> tuple[float, float]:
    count = float(re.search(rf"^{name}_count{{[^}}]*}} (\S+)$", metrics, re.M).group(1))
    total = float(re.search(rf"^{name}_sum{{[^}}]*}} (\S+)$", metrics, re.M).group(1))
    return count, total


@pytest.fixture(scope="module")
def scale_server(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("batching")
    model = build_scale_model(tmp / "scale.onnx")
    with serving(
        model, "scale", tmp / "mserve.log", "--max-batch-size", "32", "--max-batch-delay-ms", "200"
    ) as s:
        yield s


def test_concurrent_requests_are_merged_and_split_back(scale_server: Server) -> None:
    # Widths 3 and 5 interleaved: two kinds of batch, never one merged across widths.
    inputs = [np.full((1 + i % 2, 3 if i % 3 else 5), i, dtype=np.float32) for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        outputs = list(pool.map(lambda x: _infer(scale_server.url, "scale", x), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    metrics = scale_server.metrics()
    runs, rows = _histogram(metrics, "mserve_batch_size")
    assert rows == sum(x.shape[0] for x in inputs)
    assert runs < len(inputs), f"no request was merged: {runs} runs for {len(inputs)} requests"
    waits, _ = _histogram(metrics, "mserve_queue_wait_seconds")
    assert waits == len(inputs)


def test_fixed_batch_model_serves_with_batching_off(fixed_batch_model: Path, tmp_path: Path) -> None:
    with serving(fixed_batch_model, "fixed", tmp_path / "mserve.log", "--max-batch-size", "8") as server:
        x = np.arange(8, dtype=np.float32).reshape(2, 4)
        np.testing.assert_array_equal(_infer(server.url, "fixed", x), x * 2)
        assert "dynamic batching off: tensor 'x' has shape [2, 4]" in server.logs()
