"""DynamicBatcher: flush at max size or max delay, never merge different shapes, a bounded queue,
cancelled waiters never run, and a failed merged run re-run per member (batch isolation)."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from mserve_runtime.batching import DynamicBatcher
from mserve_runtime.errors import InvalidInput, Overloaded


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


def test_an_error_every_member_causes_fails_every_waiter() -> None:
    async def scenario() -> None:
        model = RecordingModel(fail=True)
        batcher = DynamicBatcher(model.run, max_batch_size=3, max_delay_s=1.0)
        results = await asyncio.gather(*(batcher.submit(_rows(1)) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, InvalidInput) for r in results)
        assert model.runs == [(3, 3), (1, 3), (1, 3), (1, 3)]

    asyncio.run(scenario())


class PickyModel:
    """Fails a run that holds a negative value, naming the first one it meets (like a Gather)."""

    def __init__(self) -> None:
        self.runs: list[int] = []

    async def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        self.runs.append(feed["x"].shape[0])
        await asyncio.sleep(0)
        bad = feed["x"][feed["x"] < 0]
        if bad.size:
            raise InvalidInput(f"value {bad[0]:g} is out of range")
        return [feed["x"] * 2]


def test_a_failed_merged_run_gives_each_member_its_own_result_or_error() -> None:
    async def scenario() -> None:
        model = PickyModel()
        batcher = DynamicBatcher(model.run, max_batch_size=4, max_delay_s=1.0)
        feeds = [_rows(1, start=10), _rows(1, start=-7), _rows(1, start=20), _rows(1, start=-9)]
        results = await asyncio.gather(*(batcher.submit(f) for f in feeds), return_exceptions=True)
        assert model.runs == [4, 1, 1, 1, 1]
        np.testing.assert_array_equal(results[0][0], feeds[0]["x"] * 2)
        np.testing.assert_array_equal(results[2][0], feeds[2]["x"] * 2)
        assert isinstance(results[1], InvalidInput)
        assert results[1].message == "value -7 is out of range"
        assert isinstance(results[3], InvalidInput)
        assert results[3].message == "value -9 is out of range"

    asyncio.run(scenario())


def test_the_queue_is_bounded_and_frees_as_batches_finish() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=8, max_delay_s=0.05, max_queued=2)
        first = [batcher.enqueue(_rows(1)), batcher.enqueue(_rows(1))]
        with pytest.raises(Overloaded):
            batcher.enqueue(_rows(1))
        await asyncio.gather(*first)
        assert batcher.queued == 0
        (out,) = await batcher.submit(_rows(1, start=5))
        np.testing.assert_array_equal(out, _rows(1, start=5)["x"] * 2)

    asyncio.run(scenario())


def test_cancelled_waiters_are_left_out_and_a_batch_with_none_left_never_runs() -> None:
    async def scenario() -> None:
        model = RecordingModel()
        batcher = DynamicBatcher(model.run, max_batch_size=8, max_delay_s=0.05)
        kept, dropped = batcher.enqueue(_rows(1, start=1)), batcher.enqueue(_rows(2, start=100))
        dropped.cancel()
        (out,) = await kept
        np.testing.assert_array_equal(out, _rows(1, start=1)["x"] * 2)
        assert model.runs == [(1, 3)]
        alone = batcher.enqueue(_rows(1))
        alone.cancel()
        await asyncio.sleep(0.1)
        assert model.runs == [(1, 3)]
        assert batcher.queued == 0

    asyncio.run(scenario())


def test_no_more_runs_than_the_concurrency_at_once() -> None:
    async def scenario() -> None:
        running = peak = 0

        async def slow(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await asyncio.sleep(0.02)
            running -= 1
            return [feed["x"]]

        batcher = DynamicBatcher(slow, max_batch_size=1, max_delay_s=0.0, concurrency=2)
        await asyncio.gather(*(batcher.submit(_rows(1)) for _ in range(6)))
        assert peak == 2

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


def test_requests_arriving_while_a_batch_waits_for_its_slot_join_it() -> None:
    async def scenario() -> None:
        runs: list[int] = []

        async def slow(feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            runs.append(feed["x"].shape[0])
            await asyncio.sleep(0.2)
            return [feed["x"] * 2]

        batcher = DynamicBatcher(slow, max_batch_size=8, max_delay_s=0.01, concurrency=1)
        first = asyncio.ensure_future(batcher.submit(_rows(1)))
        await asyncio.sleep(0.05)  # the first batch is running
        second = asyncio.ensure_future(batcher.submit(_rows(1, start=10)))
        await asyncio.sleep(0.05)  # the second was flushed by its delay and waits for the slot
        later = [batcher.submit(_rows(1, start=20)), batcher.submit(_rows(2, start=30))]
        results = await asyncio.gather(first, second, *later)
        # Under load, admitted one by one, they still run as one batch when the slot frees.
        assert runs == [1, 4]
        np.testing.assert_array_equal(results[3][0], _rows(2, start=30)["x"] * 2)

    asyncio.run(scenario())
