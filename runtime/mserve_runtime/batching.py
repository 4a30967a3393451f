"""Dynamic batching as a wrapper around a model run: a queue of waiters, flushed by size or delay.

Requests are merged along the first dimension only when every input has the same dtype and
the same trailing shape; otherwise they wait in separate batches. A failed run fails every
waiter of that batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from mserve_runtime.errors import ServerError
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.onnx_model import rows_of

Feed = dict[str, np.ndarray]
RunFn = Callable[[Feed], Awaitable[list[np.ndarray]]]
BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def batch_key(feed: Feed) -> BatchKey:
    """Requests with equal keys can be concatenated along dimension 0."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feed.items()))


@dataclass(slots=True)
class _Waiter:
    feed: Feed
    rows: int
    future: asyncio.Future[list[np.ndarray]]
    enqueued: float


@dataclass(slots=True)
class _PendingBatch:
    key: BatchKey
    waiters: list[_Waiter] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class DynamicBatcher:
    """Merge concurrent `submit` calls into runs of at most `max_batch_size` rows."""

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int,
        max_delay_s: float,
        metrics: RuntimeMetrics | None = None,
        model_name: str = "",
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self._pending: dict[BatchKey, _PendingBatch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_size = metrics.batch_size.labels(model_name) if metrics else None
        self._queue_wait = metrics.queue_wait.labels(model_name) if metrics else None

    async def submit(self, feed: Feed) -> list[np.ndarray]:
        """Run `feed` as part of a batch; the outputs (all model outputs) for its rows only."""
        rows = rows_of(feed)
        loop = asyncio.get_running_loop()
        if rows >= self.max_batch_size or rows == 0:
            if self._batch_size is not None:
                self._batch_size.observe(rows)
            return await self._run(feed)
        key = batch_key(feed)
        pending = self._pending.get(key)
        if pending is not None and pending.rows + rows > self.max_batch_size:
            self._flush(key)
            pending = None
        if pending is None:
            pending = self._pending[key] = _PendingBatch(key)
            pending.timer = loop.call_later(self.max_delay_s, self._flush, key)
        waiter = _Waiter(feed, rows, loop.create_future(), time.perf_counter())
        pending.waiters.append(waiter)
        pending.rows += rows
        if pending.rows >= self.max_batch_size:
            self._flush(key)
        return await waiter.future

    def _flush(self, key: BatchKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._execute(pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: _PendingBatch) -> None:
        waiters = batch.waiters
        started = time.perf_counter()
        if self._queue_wait is not None:
            for w in waiters:
                self._queue_wait.observe(started - w.enqueued)
        if self._batch_size is not None:
            self._batch_size.observe(batch.rows)
        try:
            if len(waiters) == 1:
                merged = waiters[0].feed
            else:
                merged = {name: np.concatenate([w.feed[name] for w in waiters]) for name in waiters[0].feed}
            outputs = await self._run(merged)
            for out in outputs:
                if out.ndim == 0 or out.shape[0] != batch.rows:
                    raise ServerError(
                        f"batched run returned an output of shape {list(out.shape)} for {batch.rows} rows; "
                        "serve this model with --max-batch-size 1"
                    )
        except BaseException as exc:
            for w in waiters:
                if not w.future.done():
                    w.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        offset = 0
        for w in waiters:
            end = offset + w.rows
            if not w.future.done():
                w.future.set_result([out[offset:end] for out in outputs])
            offset = end

    async def close(self) -> None:
        """Flush what is queued and wait for running batches (used when draining)."""
        for key in list(self._pending):
            self._flush(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
