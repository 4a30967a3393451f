"""Admission by queue delay: past one full batch per worker, refuse while model runs start
late; the batcher and the executor path report each run's wait; MSERVE_MAX_QUEUE_DELAY_MS
refuses careless values by name."""

from __future__ import annotations

import asyncio
import math
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from mserve_runtime.admission import Admission
from mserve_runtime.batching import DynamicBatcher
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.inference_types import InferenceRequest, InputTensor
from mserve_runtime.settings import RuntimeSettings
from pydantic import ValidationError

from tests.support.models import build_scale_model
from tests.support.serving import MSERVE


def test_past_the_floor_a_late_run_refuses_and_a_prompt_one_admits_again() -> None:
    admission = Admission(limit=10, floor=2, max_wait_s=0.1)
    admission.observe_wait(0.5)
    assert admission.try_enter()
    assert admission.try_enter()
    assert not admission.try_enter()
    assert "500 ms" in admission.refusal()
    assert "MSERVE_MAX_QUEUE_DELAY_MS" in admission.refusal()
    admission.observe_wait(0.01)
    while admission.try_enter():
        pass
    assert admission.in_flight == 10
    assert "MSERVE_MAX_IN_FLIGHT" in admission.refusal()
    admission.leave()
    assert admission.try_enter()


def test_without_a_bound_only_the_count_refuses() -> None:
    admission = Admission(limit=3, floor=1)
    admission.observe_wait(3600.0)
    assert [admission.try_enter() for _ in range(4)] == [True, True, True, False]


def test_the_batcher_reports_how_long_each_run_waited_for_its_slot() -> None:
    waits: list[float] = []

    async def slow_run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        await asyncio.sleep(0.2)
        return [feed["x"]]

    async def scenario() -> None:
        batcher = DynamicBatcher(slow_run, max_batch_size=1, max_delay_s=0.0, on_wait=waits.append)
        rows = {"x": np.ones((1, 2), dtype=np.float32)}
        await asyncio.gather(batcher.submit(rows), batcher.submit(rows))

    asyncio.run(scenario())
    assert len(waits) == 2
    assert waits[0] < 0.1 <= 0.15 <= waits[1] < 2.0, waits


def _settings(tmp_path: Path, **values: object) -> RuntimeSettings:
    model = build_scale_model(tmp_path / "scale.onnx")
    return RuntimeSettings(model_path=str(model), model_name="scale", threads=1, **values)


def test_the_bound_adds_the_batching_delay_and_zero_turns_it_off(tmp_path: Path) -> None:
    batched = DataPlane(_settings(tmp_path, max_batch_size=8, max_batch_delay_ms=5, max_queue_delay_ms=50))
    assert batched.admission.max_wait_s == pytest.approx(0.055)
    assert batched.admission.floor == max(32, batched.workers * 8)
    assert DataPlane(_settings(tmp_path, max_batch_size=1)).admission.max_wait_s == pytest.approx(0.1)
    assert DataPlane(_settings(tmp_path, max_queue_delay_ms=0)).admission.max_wait_s == math.inf


@pytest.mark.parametrize("batch", [1, 8])
def test_a_served_request_reports_its_wait(tmp_path: Path, batch: int) -> None:
    plane = DataPlane(_settings(tmp_path, max_batch_size=batch, max_batch_delay_ms=1))
    plane.load()
    plane.admission.observe_wait(99.0)
    x = np.ones((1, 4), dtype=np.float32)
    started = time.perf_counter()
    request = InferenceRequest("r", [InputTensor("x", "FP32", [1, 4], x)], {}, None)
    asyncio.run(plane.infer("scale", request))
    assert 0 <= plane.admission.waited_s <= time.perf_counter() - started


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), 1e12, "soon", ""])
def test_a_careless_max_queue_delay_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    with pytest.raises(ValidationError, match="max_queue_delay_ms"):
        _settings(tmp_path, max_queue_delay_ms=value)
    monkeypatch.setenv("MSERVE_MAX_QUEUE_DELAY_MS", str(value))
    with pytest.raises(ValidationError, match="max_queue_delay_ms"):
        _settings(tmp_path)


def test_the_cli_refuses_a_careless_max_queue_delay_before_serving(tmp_path: Path) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    command = [str(MSERVE), "serve", str(model), "--max-queue-delay-ms", "nan"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "max_queue_delay_ms" in out.stderr
    assert "Traceback" not in out.stderr
