"""Inference strategies: direct (concurrent forwards), locked (the article's global lock) and batched.

Each strategy answers `run(matrix) -> InferenceResult` and reports how long the request queued
(for the lock or the batcher) and how long the forward took, for Server-Timing and /metrics.
"""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import numpy as np
import torch

from target_server import metrics
from target_server.batching import DynamicBatcher
from target_server.config import ServerConfig
from target_server.models import ModelSpec, zeros_output


@dataclass(frozen=True)
class InferenceResult:
    outputs: np.ndarray
    queue_s: float
    infer_s: float
    batch_rows: int


T = TypeVar("T")
Offload = Callable[[Callable[[], T]], Awaitable[T]]  # runs a blocking call in a worker thread


class Strategy(Protocol):
    def run(self, parse: Callable[[], np.ndarray]) -> InferenceResult:
        """Parse the request (raising BadInput) and infer; parsing inside lets the batcher plan."""

    async def run_async(self, parse: Callable[[], np.ndarray], offload: Offload) -> InferenceResult:
        """The same on an event loop: the forward runs in `offload`'s threads (or the batcher's)."""

    def close(self) -> None: ...


class Forward:
    """The bare forward of one model, numpy in and numpy out, under inference_mode (thread-local).

    On a GPU the input moves to the device once per call (once per batch when batching) and the
    call waits for the device (torch.cuda.synchronize), so the time it takes is the real compute
    time that Server-Timing's `infer` reports, not the time to queue the kernels."""

    def __init__(self, spec: ModelSpec, module: torch.nn.Module | None, device: str = "cpu") -> None:
        self.spec = spec
        self.module = module
        self.device = device

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        metrics.forwarded(matrix.shape[0])
        if self.module is None:
            return zeros_output(matrix.shape[0], self.spec.output_width)
        with torch.inference_mode():
            if self.device == "cpu":
                return self.module(torch.from_numpy(matrix)).numpy()
            outputs = self.module(torch.from_numpy(matrix).to(self.device))
            torch.cuda.synchronize()
            return outputs.cpu().numpy()

    def timed(self, matrix: np.ndarray) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        outputs = self(matrix)
        return outputs, time.perf_counter() - start

    async def timed_async(self, matrix: np.ndarray, offload: Offload) -> tuple[np.ndarray, float]:
        """In a worker thread, except the torch-free noop, whose forward is no work at all."""
        if self.module is None:
            return self.timed(matrix)
        return await offload(lambda: self.timed(matrix))


class DirectStrategy:
    """Forwards run concurrently in whatever threads serve requests (safe for stateless eval modules)."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward

    def run(self, parse: Callable[[], np.ndarray]) -> InferenceResult:
        matrix = parse()
        start = time.perf_counter()
        outputs = self.forward(matrix)
        return InferenceResult(outputs, 0.0, time.perf_counter() - start, matrix.shape[0])

    async def run_async(self, parse: Callable[[], np.ndarray], offload: Offload) -> InferenceResult:
        matrix = parse()
        outputs, infer_s = await self.forward.timed_async(matrix, offload)
        return InferenceResult(outputs, 0.0, infer_s, matrix.shape[0])

    def close(self) -> None:
        pass


class LockedStrategy:
    """The article's design: one threading.Lock around every forward in the worker."""

    def __init__(self, forward: Forward) -> None:
        self.forward = forward
        self.lock = threading.Lock()
        self.async_lock: asyncio.Lock | None = None  # made on the worker's event loop, on first use

    def run(self, parse: Callable[[], np.ndarray]) -> InferenceResult:
        matrix = parse()
        queued = time.perf_counter()
        with self.lock:
            start = time.perf_counter()
            outputs = self.forward(matrix)
            done = time.perf_counter()
        return InferenceResult(outputs, start - queued, done - start, matrix.shape[0])

    async def run_async(self, parse: Callable[[], np.ndarray], offload: Offload) -> InferenceResult:
        matrix = parse()
        if self.async_lock is None:
            self.async_lock = asyncio.Lock()
        queued = time.perf_counter()
        async with self.async_lock:
            waited = time.perf_counter() - queued
            outputs, infer_s = await self.forward.timed_async(matrix, offload)
        return InferenceResult(outputs, waited, infer_s, matrix.shape[0])

    def close(self) -> None:
        pass


class BatchedStrategy:
    """Requests wait in the worker's DynamicBatcher and share one forward."""

    def __init__(self, forward: Forward, config: ServerConfig) -> None:
        self.batcher = DynamicBatcher(forward, max_batch=config.max_batch,
                                      max_wait_s=config.max_wait_ms / 1000.0,
                                      queue_limit=config.queue_limit,
                                      timeout_s=config.request_timeout_s)

    def run(self, parse: Callable[[], np.ndarray]) -> InferenceResult:
        done = self.batcher.submit_parsed(parse)
        return InferenceResult(done.outputs, done.queue_s, done.infer_s, done.batch_rows)

    async def run_async(self, parse: Callable[[], np.ndarray], offload: Offload) -> InferenceResult:
        done = await self.batcher.submit_parsed_async(parse)
        return InferenceResult(done.outputs, done.queue_s, done.infer_s, done.batch_rows)

    def close(self) -> None:
        self.batcher.close()


def make_strategy(config: ServerConfig, forward: Forward) -> Strategy:
    if config.batching:
        return BatchedStrategy(forward, config)
    if config.lock == "global":
        return LockedStrategy(forward)
    return DirectStrategy(forward)
