"""The ThreadPoolExecutor engine: generator processes whose threads send requests on the lean client.

Closed model: one thread per planned user, each looping request after request while the plan
says that user is active. Open model: `max_in_flight` threads share the plan's arrival schedule;
each claims the next intended send time, sleeps until it, sends, and records latency from the
intended time, so a stalled server cannot hide behind a stalled generator (no coordinated
omission). Arrivals still unclaimed when the run ends are written as `not_sent` rows.

A generative target (target.api) is read as a stream: each request's tokens are timed as they
arrive (harness.engines.sse) and written beside its row (results.tokens); a stream cut short is
an error of kind closed that keeps the tokens received.

Generators run in child processes (spawned, so no locks are inherited), each on its share of
users or arrivals, all timed on the same CLOCK_MONOTONIC origin handed over by the parent.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engines.base import EngineContext, ProgressMessage, register
from harness.engines.http_client import Connection, RequestFailed, request_bytes
from harness.engines.request_table import (
    DatasetSource,
    Kind,
    Table,
    dataset_source,
    dataset_source_of,
    mix_table,
    request_id_prefix,
    table,
)
from harness.engines.sse import OpenAIStream
from harness.engines.tls import ClientTLS
from harness.results import layout
from harness.results.samples import CLOSED, CONNECT, HTTP_ERROR, OK, TLS, Sample, SampleWriter, not_sent
from harness.scenario import dataset, expect
from harness.scenario.payload import body_headers, source_bodies, source_headers
from harness.scenario.plan import LoadPlan
from harness.scenario.prompts import Api, api_of, dataset_body

PROGRESS_INTERVAL = 1.0
# A closed-model user whose connection was refused waits this long before trying again: the
# request never reached the server, so the pause changes nothing it sees, and a dead target
# does not turn the generator into a busy loop of refused connects.
REFUSED_BACKOFF = 0.01
LATENCY_WINDOW = 4096


@dataclass(frozen=True)
class GeneratorSpec:
    gen: int
    parts: int
    host: str
    port: int
    requests: list[bytes]  # fixed requests, each generator holds all (picked by global index) ...
    timeout: float
    plan: LoadPlan
    max_in_flight: int
    samples_path: str
    tls: ClientTLS | None = None  # https: each process builds its own SSL context from these settings
    expect: dict[str, Any] | None = None  # response checks (harness.scenario.expect.resolve); None: none
    dataset: DatasetSource | None = None  # ... or a dataset, each generator reading its share of it
    template: tuple[str, str, dict[str, str]] = ("POST", "/", {})  # a dataset line's defaults: method, path, headers
    base_path: str = ""  # put before a dataset line's own endpoint
    request_id: tuple[str, str] | None = None  # (header, id prefix): send `<prefix><seq>` in it
    mix: list[Kind] | None = None  # ... or a mix (target.requests): its kinds, templates as `template`
    mix_seed: int = 0
    generative: Api | None = None  # a generative api: answers are read as streams


@dataclass
class _Counters:
    sent: int = 0
    errors: int = 0
    latencies: deque = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))


class _Generator:
    """Everything one generator process does, driven by its threads."""

    def __init__(self, spec: GeneratorSpec, stop: threading.Event) -> None:
        self.spec = spec
        self.t0 = 0.0
        self.end_at = 0.0
        self.stop = stop
        self.started = threading.Event()
        self.writer = SampleWriter(Path(spec.samples_path))
        self.counters = _Counters()
        self.in_flight = 0
        self._arrivals: Iterator[float] = iter(())
        self._arrival_lock = threading.Lock()
        self._stage_span = (0.0, -1.0, 0)  # (from, until, stage): the stage of intended times in it
        self.checker = expect.Checker(spec.expect, spec.gen) if spec.expect is not None else None
        self._tls = spec.tls.context() if spec.tls is not None else None  # one per process, shared by threads
        self.table: Table = (mix_table(spec.mix, spec.mix_seed, spec.gen, spec.parts, self._raw_of)
                             if spec.mix is not None else
                             table(spec.requests, spec.dataset, spec.gen, spec.parts, self._raw))
        self._own = itertools.count()  # this generator's requests so far (closed model): next() is atomic
        self._claimed = 0  # open model: arrivals claimed so far, under _arrival_lock
        self._seq = itertools.count()
        self._id_header = f"{spec.request_id[0]}: ".encode() if spec.request_id else None
        self._send: Callable[[Connection, int, float], bool] = (
            self._send_plain if spec.generative is None else self._send_stream)
        self._streamed = spec.generative is not None and spec.generative.streamed  # else one JSON answer

    def _raw(self, line: dataset.Line) -> bytes:
        """A dataset line as the request bytes sent for it."""
        return self._raw_of(self.spec.template, line)

    def _raw_of(self, template: tuple[str, str, dict[str, str]], line: dataset.Line) -> bytes:
        method, path, headers = template
        body = line.body if self.spec.generative is None else dataset_body(self.spec.generative, line.body)
        return request_bytes(line.method or method, self.spec.host, self.spec.port,
                             self.spec.base_path + line.endpoint if line.endpoint else path, body,
                             {**headers, **line.headers} if line.headers else headers)

    def _connected(self, send_at_start: bool) -> Connection | None:
        """The thread's connection, waiting for the common start; None if stopped before it.

        Threads due to send at t0 connect ahead, so the first requests do not pay for the
        handshake. Others must not: a sync gunicorn worker that accepts an idle connection
        blocks on it until a request arrives.
        """
        server_name = self.spec.tls.server_name if self.spec.tls is not None else None
        conn = Connection(self.spec.host, self.spec.port, tls=self._tls, server_name=server_name)
        if send_at_start:
            conn.warm_up(timeout=self.spec.timeout)
        while not self.started.wait(0.05):
            if self.stop.is_set():
                conn.close()
                return None
        return conn

    # one request, recorded ---------------------------------------------------------------
    def _stage_of(self, t: float) -> int:
        """plan.stage_at(t), remembered for the span of times that share its answer."""
        lo, hi, stage = self._stage_span
        if lo <= t < hi:
            return stage
        plan = self.spec.plan
        stage = plan.stage_at(t)
        starts = [seg.start for seg in plan.segments]
        lo = starts[stage] if stage > 0 else -math.inf
        hi = starts[stage + 1] if stage + 1 < len(starts) else math.inf
        self._stage_span = (lo, hi, stage)  # one tuple: threads never see a torn update
        return stage

    def _with_id(self, raw: bytes) -> tuple[bytes, str]:
        """The request with the next request id in its header, and the id."""
        rid = f"{self.spec.request_id[1]}{next(self._seq)}"  # type: ignore[index]
        cut = raw.find(b"\r\n\r\n") + 2
        return b"".join((raw[:cut], self._id_header, rid.encode(), b"\r\n", raw[cut:])), rid  # type: ignore[arg-type]

    def _send_plain(self, conn: Connection, slot: int, intended: float) -> bool:
        """Send request `slot` of the table and append its row (the hot path: kept lean on purpose).

        Returns True when the connection was refused (the request never reached the server)."""
        t0 = self.t0
        counters = self.counters
        check = self.checker
        requests = self.table
        raw = requests.items[slot]
        line = requests.lines[slot] if requests.lines is not None else None
        name = requests.names[slot] if requests.names is not None else None
        rid = None
        if self._id_header is not None:
            raw, rid = self._with_id(raw)
        keep = check is not None and check.wants_body()  # only a sampled check keeps the body
        self.in_flight += 1
        start = time.monotonic()
        try:
            response = conn.request(raw, self.spec.timeout, keep)
        except RequestFailed as exc:
            end = time.monotonic()
            row = tuple.__new__(Sample, (intended, start - t0, end - t0, 0, exc.kind, 0, self._stage_of(intended),
                                         self.spec.gen, None, None, None, name, line, rid))
            counters.errors += 1
            refused = exc.kind in (CONNECT, TLS)  # both fail again at once: back off, do not spin
        else:
            refused = False
            end = time.monotonic()
            status = response.status
            reason = None
            if check is not None:
                error, reason = check.judge(status, response.body)
                if error:
                    counters.errors += 1
            elif status >= 400:
                error = HTTP_ERROR
                counters.errors += 1
            else:
                error = OK
            lo, hi, stage = self._stage_span
            if not lo <= intended < hi:
                stage = self._stage_of(intended)
            # Server-Timing travels raw: the writer thread parses it (harness.results.samples.format_row)
            # a Sample built as a tuple (every field, in order): half the cost of Sample(...) per request
            row = tuple.__new__(Sample, (intended, start - t0, end - t0, status, error, response.body_bytes, stage,
                                         self.spec.gen, response.server_timing, None, None, name, line, rid))
            if reason is not None:
                self.writer.reasons[id(row)] = reason  # before the row is queued (results.checks)
        self.in_flight -= 1
        self.writer.append(row)
        counters.sent += 1
        counters.latencies.append(end - t0 - intended)
        return refused

    def _send_stream(self, conn: Connection, slot: int, intended: float) -> bool:
        """`_send_plain` for a generative api: the answer is read as a stream and its tokens timed."""
        t0 = self.t0
        requests = self.table
        raw = requests.items[slot]
        line = requests.lines[slot] if requests.lines is not None else None
        name = requests.names[slot] if requests.names is not None else None
        rid = None
        if self._id_header is not None:
            raw, rid = self._with_id(raw)
        stream = OpenAIStream(self._streamed)
        self.in_flight += 1
        start = time.monotonic()
        size = 0
        try:
            response = conn.request(raw, self.spec.timeout, sink=stream)
            end = time.monotonic()
            size = response.body_bytes
            stream.finish(end)
        except RequestFailed as exc:
            end = time.monotonic()
            error, stream.message = exc.kind, stream.message or exc.detail
        else:
            if stream.status >= 400 or stream.message is not None:
                error = HTTP_ERROR  # an error status, or an error the server sent inside the stream
            elif not stream.complete:
                error, stream.message = CLOSED, "the stream ended without a finish_reason or [DONE]"
            else:
                error = OK
        row = tuple.__new__(Sample, (intended, start - t0, end - t0, stream.status, error, size,
                                     self._stage_of(intended), self.spec.gen, None, None, None, name, line, rid))
        if stream.first_byte is not None:
            self.writer.tokens[id(row)] = (stream, t0)  # before the row is queued (results.tokens)
        self.in_flight -= 1
        self.writer.append(row)
        self.counters.sent += 1
        if error:
            self.counters.errors += 1
        self.counters.latencies.append(end - t0 - intended)
        return error in (CONNECT, TLS)

    # closed model --------------------------------------------------------------------------
    def closed_user(self, user: int) -> None:
        plan = self.spec.plan
        conn = self._connected(send_at_start=user < plan.users_at(0.0))
        if conn is None:
            return
        own, slot = self._own, self.table.slot
        duration = plan.duration
        active_until = -1.0  # before this time the plan surely keeps this user active
        try:
            while not self.stop.is_set():
                now = time.monotonic() - self.t0
                if now < active_until:
                    if self._send(conn, slot(next(own)), now):
                        self.stop.wait(REFUSED_BACKOFF)
                    continue
                if now >= duration:
                    return
                if user >= plan.users_at(now):
                    wake = plan.next_activation(user, now)
                    if wake >= plan.duration:
                        conn.close()
                        self.stop.wait(max(0.0, plan.duration - now))
                        continue
                    self.stop.wait(min(max(wake - now, 0.0), 1.0))
                    continue
                active_until = _surely_active_until(plan, user, now)
                if self._send(conn, slot(next(own)), now):
                    self.stop.wait(REFUSED_BACKOFF)
        finally:
            conn.close()

    # open model ----------------------------------------------------------------------------
    def _claim(self) -> tuple[float, int] | None:
        """The next arrival's intended time and this generator's count of it (j: global index
        gen + j * parts, the request it sends: harness.engines.request_table)."""
        with self._arrival_lock:
            intended = next(self._arrivals, None)
            if intended is None:
                return None
            own = self._claimed
            self._claimed = own + 1
            return intended, own

    def open_slot(self, slot: int) -> None:
        conn = self._connected(send_at_start=False)
        if conn is None:
            return
        pick = self.table.slot
        try:
            while not self.stop.is_set():
                claimed = self._claim()
                if claimed is None:
                    return
                intended, own = claimed
                delay = self.t0 + intended - time.monotonic()
                if delay > 0 and self.stop.wait(delay):
                    return  # stopped before this arrival was due: it was never owed
                self._send(conn, pick(own), intended)
        finally:
            conn.close()

    def _not_sent(self, intended: float) -> None:
        self.writer.append(not_sent(intended, self.spec.plan.stage_at(intended), self.spec.gen))

    def drain_not_sent(self, until: float) -> int:
        """Arrivals planned before `until` (s from start) that no thread could send."""
        count = 0
        with self._arrival_lock:
            for intended in self._arrivals:
                if intended >= until:
                    break
                self._not_sent(intended)
                count += 1
        return count

    # lifecycle -----------------------------------------------------------------------------
    def run(self, report: Any, parent_pid: int, t0_value: Any) -> None:
        """Start every thread and connection, report ready, wait for the common t0, then load."""
        spec, plan = self.spec, self.spec.plan
        if plan.model == "closed":
            users = [u for u in range(int(plan.peak + 1e-9)) if u % spec.parts == spec.gen]
            jobs: list[tuple[Callable[[int], None], int]] = [(self.closed_user, u) for u in users]
        else:
            self._arrivals = plan.arrivals(spec.gen, spec.parts)
            slots = max(1, spec.max_in_flight // spec.parts)
            jobs = [(self.open_slot, s) for s in range(slots)]
        with ThreadPoolExecutor(max_workers=max(1, len(jobs)), thread_name_prefix="user") as pool:
            futures = [pool.submit(fn, arg) for fn, arg in jobs]
            report.put(("ready", spec.gen, {"pid": os.getpid()}))
            while t0_value.value == 0.0:
                if os.getppid() != parent_pid or self.stop.is_set():
                    self.stop.set()
                    break
                time.sleep(0.002)
            self.t0 = t0_value.value
            self.end_at = self.t0 + plan.duration
            delay = self.t0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self.started.set()
            started = time.monotonic()
            while not all(f.done() for f in futures):
                time.sleep(min(PROGRESS_INTERVAL, 0.2))
                if time.monotonic() >= self.end_at or os.getppid() != parent_pid:
                    self.stop.set()
                self._progress(report)
            for f in futures:
                f.result()
        stopped_at = min(time.monotonic(), self.end_at) - self.t0
        not_sent = self.drain_not_sent(stopped_at) if plan.model == "open" else 0
        self.writer.close()
        report.put(("done", spec.gen, {"rows": self.writer.written, "not_sent": not_sent,
                                       "wall_s": time.monotonic() - started}))

    _last_progress = 0.0

    def _progress(self, report: Any) -> None:
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        c = self.counters
        latencies = list(c.latencies)
        c.latencies.clear()
        report.put(("progress", self.spec.gen, {"sent": c.sent, "errors": c.errors,
                                                "latencies": latencies, "in_flight": self.in_flight}))


def _surely_active_until(plan: LoadPlan, user: int, t: float) -> float:
    """A time before which `user`, active at t, stays active without asking the plan again.

    Within a stage the target moves linearly: a level or rising stage keeps every active user
    until it ends; a falling one until (a millisecond before) it drops below user + 1. The
    loop asks `plan.users_at` again from then on, so the answer is never wrong, only cheaper.
    """
    seg = plan.segments[plan.stage_at(t)]
    if seg.duration <= 0 or t >= seg.stop:
        return t
    until = min(seg.stop, plan.duration)
    if seg.end < seg.begin:
        cross = seg.start + (seg.begin - (user + 1)) / (seg.begin - seg.end) * seg.duration
        until = min(until, cross - 1e-3)
    return until


def generator_main(spec: GeneratorSpec, report: Any, t0_value: Any, stop_flag: Any, parent_pid: int) -> None:
    """Entry point of a generator process.

    Start and stop are shared-memory values polled here, not multiprocessing Events: an Event's
    set() blocks forever if a process died while waiting on it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    stop = threading.Event()
    threading.Thread(target=_relay_stop, args=(stop_flag, stop), daemon=True).start()
    _Generator(spec, stop).run(report, parent_pid, t0_value)


def _relay_stop(stop_flag: Any, stop: threading.Event) -> None:
    while not stop.wait(0.05):
        if stop_flag.value:
            stop.set()


class ThreadPoolEngine:
    """Parent-side handle: starts generator processes on one clock, relays progress, stops them."""

    def __init__(self, specs: list[GeneratorSpec]) -> None:
        self.ctx = mp.get_context("spawn")
        self.specs = specs
        self.reports = self.ctx.Queue()
        self.stop_flag = self.ctx.Value("b", 0, lock=False)
        self.t0 = self.ctx.Value("d", 0.0, lock=False)
        self.processes: list[Any] = []
        self.done: dict[int, dict[str, Any]] = {}

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def start(self, ready_timeout: float = 60.0) -> float:
        """Spawn every generator, wait until all are ready, then start them together; returns t0."""
        for spec in self.specs:
            proc = self.ctx.Process(target=generator_main, name=f"generator-{spec.gen}",
                                    args=(spec, self.reports, self.t0, self.stop_flag, os.getpid()),
                                    daemon=True)
            proc.start()
            self.processes.append(proc)
        ready: set[int] = set()
        deadline = time.monotonic() + ready_timeout
        while len(ready) < len(self.specs):
            try:
                kind, gen, _ = self.reports.get(timeout=0.2)
            except queue.Empty:
                if time.monotonic() > deadline or not all(p.is_alive() for p in self.processes):
                    raise RuntimeError("generator processes did not start") from None
                continue
            if kind == "ready":
                ready.add(gen)
        t0 = time.monotonic() + 0.05
        self.t0.value = t0
        return t0

    def messages(self, timeout: float) -> list[ProgressMessage]:
        raw = []
        try:
            raw.append(self.reports.get(timeout=timeout))
            while True:
                raw.append(self.reports.get_nowait())
        except queue.Empty:
            pass
        out = []
        for kind, gen, payload in raw:
            if kind == "done":
                self.done[gen] = payload
            elif kind == "progress":
                out.append(ProgressMessage(gen, payload["sent"], payload["errors"], payload["latencies"]))
        return out

    @property
    def finished(self) -> bool:
        return len(self.done) == len(self.specs) or not any(p.is_alive() for p in self.processes)

    def stop(self) -> None:
        self.stop_flag.value = 1

    def reasons(self) -> list[str]:
        """Validity problems only this engine knows about (none: CPU and lag come from the files)."""
        return []

    def close(self, timeout: float) -> None:
        """Wait for generators to finish their in-flight requests; kill what does not end in time."""
        deadline = time.monotonic() + timeout
        while not self.finished and time.monotonic() < deadline:
            self.messages(0.1)
        for proc in self.processes:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=2)
        self.messages(0.05)


@register("threadpool")
def threadpool_engine(context: EngineContext) -> ThreadPoolEngine:
    """One generator process per `generator.processes`, each on its share of the plan."""
    scenario, target = context.scenario, context.scenario.target
    path = context.base_path + target.endpoint
    headers = {**body_headers(scenario), **context.headers}
    source = dataset_source(scenario)
    raws = [] if source is not None else [request_bytes(target.method, context.host, context.port, path, body,
                                                        headers) for body in context.bodies]
    parts = scenario.generator.processes
    rid = target.request_id
    mix = None
    if target.requests is not None:
        mix = []
        for kind in target.requests:
            method = kind.method or target.method
            kind_path = context.base_path + (kind.endpoint or target.endpoint)
            kind_headers = {**source_headers(kind, method), **context.headers, **kind.headers}
            mix.append(Kind(kind.name, kind.weight,
                            [] if kind.dataset else [request_bytes(method, context.host, context.port, kind_path, body,
                                                                   kind_headers)
                                                     for body in source_bodies(kind, method, Path("."))],
                            dataset_source_of(kind.dataset), (method, kind_path, kind_headers)))
    return ThreadPoolEngine([GeneratorSpec(gen=g, parts=parts, host=context.host, port=context.port,
                                           requests=raws, timeout=target.timeout, plan=context.plan,
                                           max_in_flight=scenario.load.max_in_flight,
                                           samples_path=str(layout.samples_file(context.run_dir, g)),
                                           tls=context.tls, expect=expect.resolve(scenario),
                                           dataset=source, template=(target.method, path, headers),
                                           base_path=context.base_path,
                                           request_id=(rid.header, request_id_prefix(context.run_dir, g))
                                           if rid is not None else None, mix=mix, mix_seed=target.mix_seed,
                                           generative=api_of(target, context.model or ""))
                             for g in range(parts)])
