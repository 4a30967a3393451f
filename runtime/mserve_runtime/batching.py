"""Dynamic batching as a wrapper around a model run: a queue of waiters, flushed by size or delay.

Requests are merged along the first dimension only when every input has the same dtype and
the same trailing shape; otherwise they wait in separate batches. A flushed batch waits for
one of `concurrency` run slots and keeps taking requests of its kind (up to the size limit)
until it gets one, as Triton's batcher fills a batch while its model instance is busy:
under load, requests admitted one by one as others finish still make full batches. It is
merged only when it gets its slot, so a waiter cancelled meanwhile (deadline, client gone)
is left out, and a batch with no waiter left never runs.
When a merged run fails, each member runs again alone, so that every client gets its own
result or its own error, never another client's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from mserve_runtime.errors import Overloaded, ServerError
from mserve_runtime.metrics import RuntimeMetrics
from mserve_runtime.onnx_model import rows_of
from mserve_runtime.usage_metrics import Usage

log = logging.getLogger("mserve.batching")

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
    usage: Usage | None = None


@dataclass(slots=True)
class _PendingBatch:
    key: BatchKey | None
    waiters: list[_Waiter] = field(default_factory=list)
    rows: int = 0
    timer: asyncio.TimerHandle | None = None


class DynamicBatcher:
    """Merge concurrent `submit` calls into runs of at most `max_batch_size` rows.

    At most `max_queued` requests wait or run at once (0: no bound); one more gets
    Overloaded. At most `concurrency` runs are in progress at once. `on_wait` hears, as each
    run starts, how long its oldest request waited.
    """

    def __init__(
        self,
        run: RunFn,
        max_batch_size: int,
        max_delay_s: float,
        metrics: RuntimeMetrics | None = None,
        model_name: str = "",
        *,
        max_queued: int = 0,
        concurrency: int = 1,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        self._run = run
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queued = max_queued
        self.queued = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._pending: dict[BatchKey, _PendingBatch] = {}
        # Flushed batches waiting for a run slot, still open to requests of their kind.
        self._waiting: dict[BatchKey, _PendingBatch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch_size = metrics.batch_size.labels(model_name) if metrics else None
        self._queue_wait = metrics.queue_wait.labels(model_name) if metrics else None
        self._on_wait = on_wait

    async def submit(self, feed: Feed) -> list[np.ndarray]:
        """Run `feed` as part of a batch; the outputs (all model outputs) for its rows only."""
        return await self.enqueue(feed)

    def enqueue(self, feed: Feed, usage: Usage | None = None) -> asyncio.Future[list[np.ndarray]]:
        """Queue `feed`; the future of its outputs. Cancelling it before its batch runs drops it.
        `usage` hears its rows and its share (by rows) of the run's time."""
        if self.max_queued and self.queued >= self.max_queued:
            raise Overloaded(f"the batcher already holds {self.queued} requests; retry later")
        rows = rows_of(feed)
        loop = asyncio.get_running_loop()
        waiter = _Waiter(feed, rows, loop.create_future(), time.perf_counter(), usage)
        self.queued += 1
        if rows >= self.max_batch_size or rows == 0:
            self._start(_PendingBatch(None, [waiter], rows))
            return waiter.future
        key = batch_key(feed)
        waiting = self._waiting.get(key)
        if waiting is not None and waiting.rows + rows <= self.max_batch_size:
            waiting.waiters.append(waiter)
            waiting.rows += rows
            return waiter.future
        pending = self._pending.get(key)
        if pending is not None and pending.rows + rows > self.max_batch_size:
            self._flush(key)
            pending = None
        if pending is None:
            pending = self._pending[key] = _PendingBatch(key)
            pending.timer = loop.call_later(self.max_delay_s, self._flush, key)
        pending.waiters.append(waiter)
        pending.rows += rows
        if pending.rows >= self.max_batch_size:
            self._flush(key)
        return waiter.future

    def _flush(self, key: BatchKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
        self._waiting[key] = pending
        self._start(pending)

    def _start(self, batch: _PendingBatch) -> None:
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: _PendingBatch) -> None:
        try:
            async with self._slots:
                if batch.key is not None and self._waiting.get(batch.key) is batch:
                    del self._waiting[batch.key]
                waiters = [w for w in batch.waiters if not w.future.done()]
                if waiters:
                    await self._run_batch(waiters)
        except BaseException:
            for w in batch.waiters:
                w.future.cancel()
            raise
        finally:
            self.queued -= len(batch.waiters)

    async def _run_batch(self, waiters: list[_Waiter]) -> None:
        started = time.perf_counter()
        if self._on_wait is not None:
            self._on_wait(started - waiters[0].enqueued)
        if self._queue_wait is not None:
            for w in waiters:
                self._queue_wait.observe(started - w.enqueued)
        try:
            if len(waiters) == 1:
                merged = waiters[0].feed
            else:
                merged = {name: np.concatenate([w.feed[name] for w in waiters]) for name in waiters[0].feed}
            outputs = await self._run_rows(merged, sum(w.rows for w in waiters), split=len(waiters) > 1)
        except Exception as exc:
            if len(waiters) == 1:
                _settle(waiters[0], exc)
                return
            # A client's values (e.g. an index out of range) are the usual cause: quiet, it is theirs.
            level = logging.WARNING if isinstance(exc, ServerError) else logging.DEBUG
            log.log(level, "a merged run of %d requests failed (%s); running each alone", len(waiters), exc)
            for w in waiters:
                if not w.future.done():
                    try:
                        alone_started = time.perf_counter()
                        outputs = await self._run_rows(w.feed, w.rows, split=False)
                        _charge([w], w.rows, time.perf_counter() - alone_started)
                        _settle(w, outputs)
                    except Exception as alone:
                        _settle(w, alone)
            return
        _charge(waiters, sum(w.rows for w in waiters), time.perf_counter() - started)
        offset = 0
        for w in waiters:
            end = offset + w.rows
            _settle(w, [out[offset:end] for out in outputs])
            offset = end

    async def _run_rows(self, feed: Feed, rows: int, split: bool) -> list[np.ndarray]:
        """One model run; with `split`, every output must have `rows` rows to share out."""
        if self._batch_size is not None:
            self._batch_size.observe(rows)
        outputs = await self._run(feed)
        for out in outputs if split else ():
            if out.ndim == 0 or out.shape[0] != rows:
                raise ServerError(
                    f"batched run returned an output of shape {list(out.shape)} for {rows} rows; "
                    "serve this model with --max-batch-size 1"
                )
        return outputs

    async def close(self) -> None:
        """Flush what is queued and wait for running batches (used when draining)."""
        for key in list(self._pending):
            self._flush(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _charge(waiters: list[_Waiter], rows: int, seconds: float) -> None:
    """Give each waiter's usage its rows and its share of the run's `seconds`, by rows."""
    for w in waiters:
        if w.usage is not None:
            w.usage.rows += w.rows
            w.usage.compute_s += seconds * w.rows / rows if rows else seconds / len(waiters)


def _settle(waiter: _Waiter, outcome: list[np.ndarray] | Exception) -> None:
    if waiter.future.done():
        return
    if isinstance(outcome, Exception):
        waiter.future.set_exception(outcome)
    else:
        waiter.future.set_result(outcome)
