"""Dynamic batching in one gunicorn worker: concurrent requests share a forward.

Policy (Triton's default plus one refinement): when the model becomes free it takes whatever is
queued, up to `max_batch` rows. It waits for more (at most `max_wait_s` after the oldest queued
request arrived) only while other requests are already being parsed in this worker, so a lone
request at low load never waits for batch-mates that are not coming.

Submitters wake the batcher only when that changes what it waits for (the queue stops being empty,
a full batch is queued, nobody is parsing any more): every needless wake-up is a thread switch and
a GIL hand-over in a process whose one GIL also serves all the HTTP threads.

Requests on an event loop (the FastAPI twin) queue in the same batcher and await a future that
the batcher thread settles, so a waiting request holds no thread.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class Overloaded(Exception):
    """The queue is full or a request waited too long: answer 503 with Retry-After."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class BatchResult:
    outputs: np.ndarray
    queue_s: float
    infer_s: float
    batch_rows: int


class _Pending:
    """One queued request; `done` is a lock held until the batcher releases it with the outcome
    (and calls `wake`, for a request awaited on an event loop)."""

    __slots__ = ("matrix", "enqueued", "done", "wake", "result", "error")

    def __init__(self, matrix: np.ndarray, enqueued: float, wake: Callable[[], object] | None = None) -> None:
        self.matrix = matrix
        self.enqueued = enqueued
        self.done = threading.Lock()  # a bare lock: cheaper to wait on and wake than an Event
        self.done.acquire()
        self.wake = wake
        self.result: BatchResult | None = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        self.done.release()
        if self.wake is not None:
            self.wake()


class DynamicBatcher:
    def __init__(self, forward: Callable[[np.ndarray], np.ndarray], *, max_batch: int,
                 max_wait_s: float, queue_limit: int, timeout_s: float) -> None:
        self._forward = forward
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue_limit = queue_limit
        self.timeout_s = timeout_s
        self._cv = threading.Condition(threading.Lock())
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._incoming = 0
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="dynamic-batcher", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit_parsed(self, parse: Callable[[], np.ndarray]) -> BatchResult:
        """Parse (announced, so the batcher may wait for it) then queue and wait for the result."""
        with self._cv:
            self._incoming += 1
        try:
            matrix = parse()
        except BaseException:
            with self._cv:
                self._incoming -= 1
                if self._incoming == 0:
                    self._cv.notify()
            raise
        return self._enqueue(matrix, announced=True)

    def submit(self, matrix: np.ndarray) -> BatchResult:
        return self._enqueue(matrix, announced=False)

    async def submit_parsed_async(self, parse: Callable[[], np.ndarray]) -> BatchResult:
        """The same for a request on an event loop: it awaits its batch without holding a thread."""
        with self._cv:
            self._incoming += 1
        try:
            matrix = parse()
        except BaseException:
            with self._cv:
                self._incoming -= 1
                if self._incoming == 0:
                    self._cv.notify()
            raise
        loop = asyncio.get_running_loop()
        settled = loop.create_future()
        item = _Pending(matrix, time.perf_counter(), lambda: loop.call_soon_threadsafe(_settle, settled))
        self._admit(item, announced=True)
        try:
            await asyncio.wait_for(asyncio.shield(settled), self.timeout_s)
        except asyncio.TimeoutError:
            self._withdraw(item)
            await settled  # already taken by the batcher: its forward is running
        return self._outcome(item)

    def _enqueue(self, matrix: np.ndarray, *, announced: bool) -> BatchResult:
        item = _Pending(matrix, time.perf_counter())
        self._admit(item, announced=announced)
        if not item.done.acquire(timeout=self.timeout_s):
            self._withdraw(item)
            item.done.acquire()  # already taken by the batcher: its forward is running
        return self._outcome(item)

    def _withdraw(self, item: _Pending) -> None:
        """A request that waited `timeout_s`: out of the queue with 503, unless its forward runs."""
        with self._cv:
            if item in self._queue:
                self._queue.remove(item)
                self._queued_rows -= item.matrix.shape[0]
                raise Overloaded(f"request waited {self.timeout_s:g} s in the batch queue")

    @staticmethod
    def _outcome(item: _Pending) -> BatchResult:
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def _admit(self, item: _Pending, *, announced: bool) -> None:
        matrix = item.matrix
        with self._cv:
            if announced:
                self._incoming -= 1
            if self._closed:
                raise Overloaded("server is shutting down")
            if len(self._queue) >= self.queue_limit:
                if self._incoming == 0:
                    self._cv.notify()
                raise Overloaded(f"batch queue is full ({self.queue_limit} requests waiting)")
            self._queue.append(item)
            self._queued_rows += matrix.shape[0]
            if len(self._queue) == 1 or self._incoming == 0 or self._queued_rows >= self.max_batch:
                self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    def _take_batch(self) -> list[_Pending] | None:
        with self._cv:
            while not self._queue and not self._closed:
                self._cv.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].enqueued + self.max_wait_s
            while self._incoming > 0 and not self._closed and self._queued_rows < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            batch = [self._queue.popleft()]
            rows = batch[0].matrix.shape[0]
            while self._queue and rows + self._queue[0].matrix.shape[0] <= self.max_batch:
                rows += self._queue[0].matrix.shape[0]
                batch.append(self._queue.popleft())
            self._queued_rows -= rows
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            self._run(batch)

    def _run(self, batch: list[_Pending]) -> None:
        start = time.perf_counter()
        try:
            outputs = self._forward(np.concatenate([p.matrix for p in batch]))
        except Exception:
            self._run_one_by_one(batch, start)
            return
        infer_s = time.perf_counter() - start
        rows = outputs.shape[0]
        offset = 0
        for p in batch:
            n = p.matrix.shape[0]
            p.result = BatchResult(outputs[offset:offset + n], start - p.enqueued, infer_s, rows)
            offset += n
            p.finish()

    def _run_one_by_one(self, batch: list[_Pending], start: float) -> None:
        """A failing batch is retried request by request, so one bad input fails only itself."""
        for p in batch:
            t0 = time.perf_counter()
            try:
                out = self._forward(p.matrix)
                p.result = BatchResult(out, start - p.enqueued, time.perf_counter() - t0, p.matrix.shape[0])
            except Exception as exc:
                p.error = exc
            p.finish()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
