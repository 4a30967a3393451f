"""The adaptive limit on requests in flight: it shrinks while model runs take longer than the
tolerance allows, never below its floor, grows back when they are prompt again, and careless
settings are refused by name."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from mserve_runtime.admission import Admission, adaptive_floor
from mserve_runtime.batching import DynamicBatcher
from mserve_runtime.concurrency_limit import MIN_SAMPLES, WINDOW_S, GradientLimit
from mserve_runtime.dataplane import DataPlane
from mserve_runtime.inference_types import InferenceRequest, InputTensor
from mserve_runtime.settings import RuntimeSettings
from pydantic import ValidationError

from tests.support.models import build_scale_model
from tests.support.serving import MSERVE


def _feed(limit: GradientLimit, sojourn_s: float, windows: int, start: float = 0.0) -> float:
    """`windows` windows of MIN_SAMPLES runs each taking `sojourn_s`; the clock after them."""
    now = start
    for _ in range(windows):
        for _ in range(MIN_SAMPLES):
            limit.observe(sojourn_s, now)
        now += WINDOW_S
    return now


def test_slow_runs_shrink_the_limit_to_its_floor_and_prompt_ones_grow_it_back() -> None:
    limit = GradientLimit(floor=2, ceiling=64, tolerance=2.0, slack_s=0.0)
    now = _feed(limit, 0.010, windows=3)
    assert limit.limit == 64  # at the minimum: no reason to shrink
    assert limit.target_s() == pytest.approx(0.020)

    now = _feed(limit, 0.080, windows=1, start=now)  # 4x the target: halve, not more
    assert limit.limit == 32
    now = _feed(limit, 0.080, windows=10, start=now)
    assert limit.limit == 2

    now = _feed(limit, 0.010, windows=40, start=now)
    assert limit.limit == 64


def test_runs_within_the_tolerance_and_the_slack_do_not_shrink_it() -> None:
    limit = GradientLimit(floor=2, ceiling=64, tolerance=2.0, slack_s=0.005)
    now = _feed(limit, 0.001, windows=1)
    _feed(limit, 0.0069, windows=5, start=now)  # 2 x 1 ms + 5 ms = 7 ms allowed
    assert limit.limit == 64


def test_the_minimum_ages_out_so_a_slower_machine_is_not_held_to_an_old_lucky_run() -> None:
    limit = GradientLimit(floor=2, ceiling=64, tolerance=2.0, slack_s=0.0)
    now = _feed(limit, 0.001, windows=1)
    now = _feed(limit, 0.050, windows=300, start=now)  # 30 s: three periods of the minimum
    assert limit.min_s == pytest.approx(0.050)
    assert limit.limit == 64


def test_under_sustained_shedding_the_minimum_is_kept_so_the_limit_does_not_drift_to_the_cap() -> None:
    """Runs that take the queue the limit admits (1 ms per 8 in flight): the limit settles
    between floor and cap, and 30 s of it neither forgets the unloaded 1 ms nor grows back."""
    limit = GradientLimit(floor=2, ceiling=64, tolerance=2.0, slack_s=0.0)
    now = _feed(limit, 0.001, windows=1)
    for _ in range(300):
        for _ in range(MIN_SAMPLES):
            limit.observe(0.001 * max(1.0, limit.limit / 8), now)
        now += WINDOW_S
    assert limit.min_s == pytest.approx(0.001)
    assert 2 < limit.limit < 32


@pytest.mark.parametrize(
    ("floor", "ceiling", "tolerance", "match"),
    [
        (0, 8, 2.0, "floor 0"),
        (9, 8, 2.0, "floor 9"),
        (1, 8, 0.5, "tolerance 0.5"),
        (1, 8, float("nan"), "nan"),
    ],
)
def test_a_careless_limit_is_refused(floor: int, ceiling: int, tolerance: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GradientLimit(floor, ceiling, tolerance, 0.0)


def test_admission_refuses_past_the_adaptive_limit_naming_the_setting() -> None:
    admission = Admission(limit=8, adaptive=GradientLimit(floor=2, ceiling=8, tolerance=1.0, slack_s=0.0))
    for sojourn_s in (0.010, 0.100, 0.100):  # 8 -> 4 -> 2: a window closes after each sleep
        for _ in range(MIN_SAMPLES):
            admission.observe_run(sojourn_s)
        time.sleep(WINDOW_S)
    assert admission.limit == 2
    assert [admission.try_enter() for _ in range(3)] == [True, True, False]
    assert "MSERVE_LATENCY_TOLERANCE" in admission.refusal()


def test_the_batcher_reports_each_runs_sojourn_from_its_oldest_request() -> None:
    sojourns: list[float] = []

    async def slow_run(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        await asyncio.sleep(0.1)
        return [feed["x"]]

    async def scenario() -> None:
        batcher = DynamicBatcher(slow_run, max_batch_size=1, max_delay_s=0.0, on_done=sojourns.append)
        rows = {"x": np.ones((1, 2), dtype=np.float32)}
        await asyncio.gather(batcher.submit(rows), batcher.submit(rows))

    asyncio.run(scenario())
    assert len(sojourns) == 2
    assert 0.1 <= sojourns[0] < 0.15 <= 0.2 <= sojourns[1] < 2.0, sojourns


def _settings(tmp_path: Path, **values: object) -> RuntimeSettings:
    model = build_scale_model(tmp_path / "scale.onnx")
    return RuntimeSettings(model_path=str(model), model_name="scale", threads=1, **values)


def test_with_batching_it_is_on_by_default_with_a_floor_of_eight_and_two_per_worker(tmp_path: Path) -> None:
    plane = DataPlane(_settings(tmp_path, latency_slack_ms=4, max_batch_size=8))
    assert plane.admission.adaptive is not None
    assert plane.admission.adaptive.tolerance == 3
    assert plane.admission.adaptive.floor == max(8, 2 * plane.workers)
    assert plane.admission.adaptive.ceiling == plane.max_in_flight
    assert plane.admission.adaptive.slack_s == pytest.approx(0.004 + 0.002)  # plus the batching delay
    assert DataPlane(_settings(tmp_path, latency_tolerance=0, max_batch_size=8)).admission.adaptive is None
    # Without dynamic batching it is off unless set.
    assert DataPlane(_settings(tmp_path)).admission.adaptive is None
    assert DataPlane(_settings(tmp_path, latency_tolerance=2)).admission.adaptive is not None


def test_the_floor_never_exceeds_the_cap() -> None:
    assert adaptive_floor(workers=1, max_in_flight=3) == 3
    assert adaptive_floor(workers=1, max_in_flight=64) == 8
    assert adaptive_floor(workers=6, max_in_flight=64) == 12


@pytest.mark.parametrize("batch", [1, 8])
def test_a_served_request_feeds_the_adaptive_limit(tmp_path: Path, batch: int) -> None:
    """Batching on (the batcher's run) and off (the executor's run) both report a sojourn."""
    plane = DataPlane(_settings(tmp_path, latency_tolerance=2, max_batch_size=batch, max_batch_delay_ms=1))
    plane.load()
    request = InferenceRequest("r", [InputTensor("x", "FP32", [1, 4], np.ones((1, 4), np.float32))], {}, None)

    async def scenario() -> None:
        await plane.infer("scale", request)
        await asyncio.sleep(0.01)  # the executor path reports through the event loop

    started = time.perf_counter()
    asyncio.run(scenario())
    assert plane.admission.adaptive is not None
    assert 0 < plane.admission.adaptive.min_s <= time.perf_counter() - started


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("latency_tolerance", 0.5),
        ("latency_tolerance", -1),
        ("latency_tolerance", float("nan")),
        ("latency_tolerance", 1e6),
        ("latency_tolerance", "fast"),
        ("latency_tolerance", ""),
        ("latency_slack_ms", -1),
        ("latency_slack_ms", float("inf")),
        ("latency_slack_ms", ""),
    ],
)
def test_careless_adaptive_settings_are_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: object
) -> None:
    with pytest.raises(ValidationError, match=field):
        _settings(tmp_path, **{field: value})
    monkeypatch.setenv(f"MSERVE_{field.upper()}", str(value))
    with pytest.raises(ValidationError, match=field):
        _settings(tmp_path)


def test_the_cli_refuses_a_careless_tolerance_before_serving(tmp_path: Path) -> None:
    model = build_scale_model(tmp_path / "scale.onnx")
    command = [str(MSERVE), "serve", str(model), "--latency-tolerance", "0.5"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "latency_tolerance must be 0 (off) or at least 1" in out.stderr
    assert "Traceback" not in out.stderr
