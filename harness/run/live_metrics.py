"""The run's live figures in Prometheus text format on 127.0.0.1:PORT/metrics while the run lasts.

Fed from the sample files as the generators write them (every ~200 ms, whichever engine), so the
counts are the rows summary.json is built from: requests by status and error kind, a latency
histogram from the intended send time, requests in flight, offered and achieved rate, generator
and server CPU (from the resource monitor), with the run and stage as labels. k6 streams the
same kind of figures to Prometheus; here a Prometheus server scrapes them (docs: observability).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from harness.engines.sample_tail import SampleTail
from harness.errors import UserError
from harness.results.samples import live_fields
from harness.scenario.plan import LoadPlan

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
RATE_WINDOW = 5.0  # s: achieved rate and requests in flight are over the last this many seconds
TICK = 0.5
LINGER = 2.0  # s the endpoint stays up after the load, so a scrape (1 s interval or less) sees the final counts


class LiveMetrics:
    """Serve the figures and keep them current (a background thread); `stop()` serves a last update
    and then closes the port, safe to call twice."""

    def __init__(self, port: int, run_dir: Path, run: str, plan: LoadPlan, t0: float,
                 cpu_of: Callable[[str], float | None], gpus: Callable[[], Sequence[Any]] = list) -> None:
        self.run, self.plan, self.t0, self.cpu_of, self.gpus = run, plan, t0, cpu_of, gpus
        self.tail = SampleTail(run_dir)
        registry = CollectorRegistry()
        self.requests = Counter("harness_requests", "Requests that ended, by status and error kind ('ok': none)",
                                ["run", "stage", "status", "error_kind"], registry=registry)
        self.latency = Histogram("harness_request_latency_seconds",
                                 "Latency from the intended send time, of requests with a response",
                                 ["run", "stage"], buckets=LATENCY_BUCKETS, registry=registry)
        self.in_flight = Gauge("harness_requests_in_flight", "Mean requests on the wire over the last "
                               f"{RATE_WINDOW:g} s (time on the wire of the requests that ended / {RATE_WINDOW:g} s)",
                               ["run"], registry=registry)
        self.offered = Gauge("harness_offered_load", "The plan's target now: req/s (open model) or users (closed)",
                             ["run", "unit"], registry=registry)
        self.achieved = Gauge("harness_achieved_rps", f"Requests that ended per second over the last {RATE_WINDOW:g} s",
                              ["run"], registry=registry)
        self.stage = Gauge("harness_stage", "Index of the load plan's stage in force", ["run"], registry=registry)
        self.cpu = Gauge("harness_process_cpu_percent", "CPU of the run's processes by role (100 = one core)",
                         ["run", "role"], registry=registry)
        self.gpu_util = Gauge("harness_gpu_utilization_percent", "GPU utilization through NVML (with a driver)",
                              ["run", "gpu"], registry=registry)
        self.gpu_memory = Gauge("harness_gpu_memory_used_bytes", "GPU memory used through NVML (with a driver)",
                                ["run", "gpu"], registry=registry)
        self.elapsed = Gauge("harness_run_elapsed_seconds", "Seconds since the load started", ["run"], registry=registry)
        self.recent: deque[tuple[float, float]] = deque()  # (end, seconds on the wire) of recent requests
        try:
            self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=registry)
        except OSError as exc:
            raise UserError(f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}") \
                from None
        self._stop = threading.Event()
        self._updater = threading.Thread(target=self._run, name="live-metrics", daemon=True)
        self._updater.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/metrics"

    def update(self) -> None:
        """Count the sample rows written since the last update; refresh the gauges."""
        now = time.monotonic() - self.t0
        for fields in self.tail.new_rows():
            row = live_fields(fields)
            if row is None:
                continue
            stage, status, error, start, end, latency = row
            self.requests.labels(self.run, stage, status, error or "ok").inc()
            if latency is not None and status != "0":
                self.latency.labels(self.run, stage).observe(latency)
            if start is not None and end is not None:
                self.recent.append((end, end - start))
        while self.recent and self.recent[0][0] < now - RATE_WINDOW:
            self.recent.popleft()
        window = min(RATE_WINDOW, max(now, 1e-3))
        self.achieved.labels(self.run).set(len(self.recent) / window)
        self.in_flight.labels(self.run).set(sum(w for _, w in self.recent) / window)
        at = min(max(now, 0.0), self.plan.duration)
        self.offered.labels(self.run, "users" if self.plan.model == "closed" else "req/s").set(self.plan.target_at(at))
        self.stage.labels(self.run).set(self.plan.stage_at(at))
        self.elapsed.labels(self.run).set(now)
        for role in ("generator", "server"):
            if (cpu := self.cpu_of(role)) is not None:
                self.cpu.labels(self.run, role).set(cpu)
        for reading in self.gpus():
            if reading.utilization_percent is not None:
                self.gpu_util.labels(self.run, str(reading.index)).set(reading.utilization_percent)
            if reading.memory_used_bytes is not None:
                self.gpu_memory.labels(self.run, str(reading.index)).set(reading.memory_used_bytes)

    def _run(self) -> None:
        while not self._stop.wait(TICK):
            self.update()

    def stop(self, linger: float = LINGER) -> None:
        """Stop updating after a last update; keep serving `linger` s more (a last scrape), then close."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._updater.join(timeout=5)
        self.update()
        if linger > 0:
            time.sleep(linger)
        self.server.shutdown()
        self.server.server_close()
