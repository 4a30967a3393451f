"""DynamicBatcher: flush at max size or max delay, never merge different shapes, errors fail every waiter."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from mserve_runtime.batching import DynamicBatcher
from mserve_runtime.errors import InvalidInput


class RecordingModel:
    """Doubles its input and records the batch shapes it ran."""

    def __init__(self, fail: bool = False) -> None:
        self.runs: list[tuple[int, ...]] = []
        self.fail = fail

    async def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs.append(feed["x"].shape)
        await asyncio.sleep(0)
        if self.fail:
            raise InvalidInput("boom")
        return [feed["x"] * 2]


def _rows(n: int, width: int = 3, start: float = 0.0) -> dict[str, np.ndarray]:
    return {"x": (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)}


def test_flushes_when_max_batch_size_is_reached_without_waiting_for_the_delay() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay_s=10.0)
        started = time.perf_counter()
        feeds = [_rows(1, start=i * 10) for i in range(4)]
        results = await asyncio.gather(*(batcher.submit(f) for f in feeds))
        assert time.perf_counter() - started < 1.0
        assert model.runs == [(4, 3)]
        for feed, (out,) in zip(feeds, results, strict=True):
            np.testing.assert_array_equal(out, feed["x"] * 2)

    asyncio.run(scenario())


def test_flushes_a_partial_batch_after_the_delay() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=64, max_delay_s=0.05)
        started = time.perf_counter()
        results = await asyncio.gather(batcher.submit(_rows(2)), batcher.submit(_rows(3, start=100)))
        elapsed = time.perf_counter() - started
        assert 0.04 <= elapsed < 1.0
        assert model.runs == [(5, 3)]
        assert results[0][0].shape == (2, 3)
        assert results[1][0].shape == (3, 3)
        np.testing.assert_array_equal(results[1][0], _rows(3, start=100)["x"] * 2)

    asyncio.run(scenario())


def test_different_trailing_shapes_or_dtypes_are_not_merged() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=64, max_delay_s=0.02)
        f64 = {"x": np.ones((1, 3), dtype=np.float64)}
        results = await asyncio.gather(
            batcher.submit(_rows(1, width=3)),
            batcher.submit(_rows(1, width=5)),
            batcher.submit(_rows(1, width=3)),
            batcher.submit(f64),
        )
        assert sorted(model.runs) == [(1, 3), (1, 5), (2, 3)]
        assert results[1][0].shape == (1, 5)
        assert results[3][0].dtype == np.float64

    asyncio.run(scenario())


def test_an_error_fails_every_waiter_of_the_batch() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(RecordingModel(fail=True).run, max_batch_size=3, max_delay_s=1.0)
        results = await asyncio.gather(*(batcher.submit(_rows(1)) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, InvalidInput) for r in results)

    asyncio.run(scenario())


def test_a_request_larger_than_the_batch_runs_alone() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay_s=1.0)
        (out,) = await batcher.submit(_rows(9))
        assert out.shape == (9, 3)
        assert model.runs == [(9, 3)]

    asyncio.run(scenario())


def test_overflowing_request_starts_a_new_batch() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay_s=0.02)
        await asyncio.gather(batcher.submit(_rows(3)), batcher.submit(_rows(2)))
        assert model.runs == [(3, 3), (2, 3)]

    asyncio.run(scenario())


def test_inputs_that_disagree_on_rows_are_rejected() -> None:
    async def scenario() -> None:
        batcher = DynamicBatcher(RecordingModel().run, max_batch_size=4, max_delay_s=0.01)
        with pytest.raises(InvalidInput, match="first dimension"):
            await batcher.submit({"x": np.ones((2, 3)), "y": np.ones((3, 3))})

    asyncio.run(scenario())
