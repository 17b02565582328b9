"""How generations share a worker's model: alone in their request threads, or continuously batched.

`SoloGeneration` (max_batch 1): each stream runs its own prefill and decode loop in the thread
serving it, with its own cache, forwarding alone; with `lock: global` one generation at a time
holds the worker's lock (the tutorial's design), without it they run concurrently.

`ContinuousBatcher` (max_batch > 1; Orca, OSDI 2022): one engine thread advances every active
sequence by one token per decode step. A new request joins at the next step: before each decode
step the engine prefills up to `prefill_chunk` prompt tokens of waiting requests (one request at
a time, the next one starting where the last one's prompt ended), so a long prompt delays running
streams by one chunk's time, not its whole prefill, and short prompts join several per step. `max_batch` caps the
active sequences; past `queue_limit` waiting ones a request is refused at once (Overloaded), and
one that waited `request_timeout_s` without starting is refused too. A sequence that finishes,
stops or is cancelled (its client went away) leaves the batch at the next step.
"""
from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from target_server.batching import Overloaded


class Model(Protocol):
    """What the strategies need of a model with a KV cache (tinylm's, or a test's stand-in)."""

    def prefill(self, row: int, tokens: torch.Tensor, start: int) -> torch.Tensor: ...

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor: ...

    def move(self, source: int, target: int, length: int) -> None: ...


@dataclass
class Generation:
    """One request to generate: prompt tokens, how many to produce, how to sample."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 1.0
    seed: int | None = None
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)


def sample(logits: torch.Tensor, generations: list[Generation]) -> list[int]:
    """One token per row: the argmax at temperature 0, else a draw (Gumbel-max) from each request's
    own generator, so a seeded request gives the same text whatever shares its batch."""
    values = logits.float().numpy()
    out = []
    for row, g in zip(values, generations):
        if g.temperature > 0:
            row = row / g.temperature + g.rng.gumbel(size=row.shape[0])
        out.append(int(row.argmax()))
    return out


class Finished(Exception):
    """Raised by a stream's iterator when the server refuses or drops the generation."""


# --- one stream at a time per thread ---------------------------------------------------------------


class SoloGeneration:
    """Each stream generates in its own thread and cache (`make_model(slots)` builds one per stream).

    With `locked`, a generation holds the worker's lock from its first prefill to its last token:
    one generation at a time, as the tutorial's lock around each request's inference; a request
    that cannot take the lock within `timeout_s` is refused (Overloaded). Without it the streams
    forward concurrently, each alone, competing for the cores.
    """

    def __init__(self, make_model: Callable[[int], Model], *, prefill_chunk: int, locked: bool,
                 timeout_s: float) -> None:
        self.make_model = make_model
        self.prefill_chunk = prefill_chunk
        self.lock = threading.Lock() if locked else None
        self.timeout_s = timeout_s
        self.active = 0
        self.count_lock = threading.Lock()
        self.on_batch: Callable[[int], None] = lambda size: None
        self.on_active: Callable[[int], None] = lambda change: None

    def stream(self, g: Generation) -> Iterator[int]:
        if self.lock is not None and not self.lock.acquire(timeout=self.timeout_s):
            raise Overloaded(f"waited {self.timeout_s:g} s for the generation ahead to finish (lock: global, "
                             "request_timeout_s)")
        try:
            yield from self._generate(g)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _generate(self, g: Generation) -> Iterator[int]:
        model = self.make_model(1)
        with self.count_lock:
            self.active += 1
        self.on_active(1)
        try:
            logits = None
            with torch.inference_mode():
                for start in range(0, len(g.prompt), self.prefill_chunk):
                    logits = model.prefill(0, torch.tensor(g.prompt[start:start + self.prefill_chunk]), start)
            assert logits is not None
            length = len(g.prompt)
            for produced in range(g.max_tokens):
                token = sample(logits.unsqueeze(0), [g])[0]
                yield token
                if produced + 1 == g.max_tokens:
                    return
                with torch.inference_mode():
                    logits = model.decode(torch.tensor([token]), torch.tensor([length]))[0]
                self.on_batch(1)
                length += 1
        finally:
            with self.count_lock:
                self.active -= 1
            self.on_active(-1)

    def close(self) -> None:
        pass


# --- continuous batching ---------------------------------------------------------------------------


class _Sequence:
    __slots__ = ("generation", "out", "enqueued", "row", "filled", "produced", "last", "cancelled")

    def __init__(self, generation: Generation, enqueued: float) -> None:
        self.generation = generation
        self.out: queue.SimpleQueue[int | BaseException | None] = queue.SimpleQueue()
        self.enqueued = enqueued
        self.row = -1
        self.filled = 0  # prompt tokens in the cache
        self.produced = 0
        self.last = 0  # the token to feed at the next decode step
        self.cancelled = False


class ContinuousBatcher:
    """The engine thread of one worker and its waiting line (see the module docstring)."""

    def __init__(self, model: Model, *, max_batch: int, prefill_chunk: int, queue_limit: int,
                 timeout_s: float) -> None:
        self.model = model
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.queue_limit = queue_limit
        self.timeout_s = timeout_s
        self.on_batch: Callable[[int], None] = lambda size: None
        self.on_active: Callable[[int], None] = lambda change: None  # +1 joins, -1 leaves a row
        self._cv = threading.Condition()
        self._waiting: deque[_Sequence] = deque()
        self._decoding: list[_Sequence] = []
        self._filling: _Sequence | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="continuous-batcher", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Sequences holding a cache row (decoding, or prefilling)."""
        return len(self._decoding) + (self._filling is not None)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def stream(self, g: Generation) -> Iterator[int]:
        """The tokens of `g` as the engine makes them; closing the iterator cancels the sequence."""
        seq = self._submit(g)
        try:
            while True:
                item = seq.out.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.cancel(seq)

    def _submit(self, g: Generation) -> _Sequence:
        seq = _Sequence(g, time.monotonic())
        with self._cv:
            if self._closed:
                raise Overloaded("the server is shutting down")
            if len(self._waiting) >= self.queue_limit:
                raise Overloaded(f"{len(self._waiting)} generations are already waiting (queue_limit); retry later")
            self._waiting.append(seq)
            self._cv.notify()
        return seq

    def cancel(self, seq: _Sequence) -> None:
        with self._cv:
            seq.cancelled = True
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join(timeout=5)

    # --- the engine thread ------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._work():
                    self._cv.wait(timeout=self._next_deadline())
                    self._expire()
                if self._closed:
                    self._fail_all(Overloaded("the server is shutting down"))
                    return
                self._expire()
            try:
                self._prefill_step()
                with self._cv:
                    decoding = list(self._decoding)
                if decoding:
                    self._decode(decoding)
            except Exception as exc:  # a model failure fails the sequences it holds, not the worker
                with self._cv:
                    for seq in [*self._decoding, *([self._filling] if self._filling else [])]:
                        seq.out.put(Finished(f"generation failed: {exc.__class__.__name__}: {exc}"))
                        seq.cancelled = True
                    self._drop_cancelled()

    def _prefill_step(self) -> None:
        """Prompt tokens of waiting requests, up to `prefill_chunk` in all: one request's next chunk,
        and when its prompt ends before the budget does, the next request's first chunk."""
        budget = self.prefill_chunk
        while budget > 0:
            with self._cv:
                self._drop_cancelled()
                self._admit()
                seq = self._filling
            if seq is None:
                return
            budget -= self._prefill_chunk(seq, budget)

    def _work(self) -> bool:
        return bool(self._decoding or self._filling or self._waiting
                    or any(s.cancelled for s in self._decoding))

    def _next_deadline(self) -> float | None:
        if not self._waiting:
            return None
        return max(0.0, self._waiting[0].enqueued + self.timeout_s - time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        while self._waiting and (self._waiting[0].cancelled or now - self._waiting[0].enqueued >= self.timeout_s):
            seq = self._waiting.popleft()
            if not seq.cancelled:
                seq.out.put(Overloaded(f"waited {self.timeout_s:g} s for a free sequence slot (request_timeout_s)"))
        for seq in [s for s in self._waiting if s.cancelled]:
            self._waiting.remove(seq)

    def _admit(self) -> None:
        """The oldest waiting request starts filling once the batch has room (one fills at a time)."""
        if self._filling is None and self._waiting and len(self._decoding) < self.max_batch:
            seq = self._waiting.popleft()
            seq.row = len(self._decoding)
            self._filling = seq
            self.on_active(1)

    def _drop_cancelled(self) -> None:
        """Cancelled sequences leave; the last decoding row fills each hole so rows stay 0..n-1."""
        if self._filling is not None and self._filling.cancelled:
            self._filling = None
            self.on_active(-1)
        for seq in [s for s in self._decoding if s.cancelled]:
            self._remove(seq)

    def _remove(self, seq: _Sequence) -> None:
        last = self._decoding[-1]
        if last is not seq:
            self.model.move(last.row, seq.row, len(last.generation.prompt) + last.produced)
            last.row = seq.row
            self._decoding[seq.row] = last
        self._decoding.pop()
        self.on_active(-1)
        filling = self._filling
        if filling is not None and filling.row != len(self._decoding):
            self.model.move(filling.row, len(self._decoding), filling.filled)
            filling.row = len(self._decoding)

    def _prefill_chunk(self, seq: _Sequence, budget: int) -> int:
        """Prefill up to `budget` more prompt tokens of `seq`; the tokens it took."""
        prompt = seq.generation.prompt
        chunk = torch.tensor(prompt[seq.filled:seq.filled + budget])
        with torch.inference_mode():
            logits = self.model.prefill(seq.row, chunk, seq.filled)
        with self._cv:
            if seq.cancelled or self._filling is not seq:
                return chunk.shape[0]
            seq.filled += chunk.shape[0]
            if seq.filled < len(prompt):
                return chunk.shape[0]
            self._filling = None
            self._emit(seq, sample(logits.unsqueeze(0), [seq.generation])[0])
            if seq.cancelled:  # max_tokens 1: done at its first token
                self.on_active(-1)
            else:
                self._decoding.append(seq)
        return chunk.shape[0]

    def _decode(self, batch: list[_Sequence]) -> None:
        tokens = torch.tensor([s.last for s in batch])
        lengths = torch.tensor([len(s.generation.prompt) + s.produced - 1 for s in batch])
        with torch.inference_mode():
            logits = self.model.decode(tokens, lengths)
        self.on_batch(len(batch))
        picks = sample(logits, [s.generation for s in batch])
        with self._cv:
            for seq, token in zip(batch, picks):
                if not seq.cancelled:
                    self._emit(seq, token)
            self._drop_cancelled()

    def _emit(self, seq: _Sequence, token: int) -> None:
        """Hand a token to its stream; the last one also ends the stream and frees the row."""
        seq.out.put(token)
        seq.produced += 1
        seq.last = token
        if seq.produced >= seq.generation.max_tokens:
            seq.out.put(None)
            seq.cancelled = True  # leaves at the next _drop_cancelled

    def _fail_all(self, exc: BaseException) -> None:
        if self.active:
            self.on_active(-self.active)
        for seq in [*self._waiting, *self._decoding, *([self._filling] if self._filling else [])]:
            seq.out.put(exc)
        self._waiting.clear()
        self._decoding.clear()
        self._filling = None
