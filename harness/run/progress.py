"""The live progress line: elapsed / total, stage, target, achieved req/s, recent p95, errors."""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import TextIO

import numpy as np

from harness.engines.base import ProgressMessage
from harness.scenario.plan import LoadPlan

RECENT_LATENCIES = 20_000  # bounds memory when nothing is printed (quiet runs, long intervals)


class Progress:
    """Aggregates generator reports; prints once a second on a terminal, every 5 s in logs."""

    def __init__(self, plan: LoadPlan, t0: float, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.plan = plan
        self.t0 = t0
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = self.stream.isatty()
        self.interval = 1.0 if self.tty else 5.0
        self.sent: dict[int, int] = {}
        self.errors: dict[int, int] = {}
        self.latencies: deque[float] = deque(maxlen=RECENT_LATENCIES)
        self._last_print = t0
        self._last_sent = 0

    def update(self, messages: list[ProgressMessage]) -> None:
        for message in messages:
            self.sent[message.gen] = message.sent
            self.errors[message.gen] = message.errors
            if not self.quiet:
                self.latencies.extend(message.latencies)
        now = time.monotonic()
        if not self.quiet and now - self._last_print >= self.interval:
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = now - self.t0
        sent = sum(self.sent.values())
        rate = (sent - self._last_sent) / (now - self._last_print)
        p95 = f"{np.percentile(self.latencies, 95) * 1000:.1f} ms" if self.latencies else "-"
        unit = "users" if self.plan.model == "closed" else "req/s"
        stage = self.plan.stage_at(min(elapsed, self.plan.duration))
        line = (f"[{elapsed:6.1f}s/{self.plan.duration:.0f}s] stage {stage + 1}/{len(self.plan.segments)} "
                f"target {self.plan.target_at(elapsed):.0f} {unit} | {rate:8.1f} req/s | p95 {p95} | "
                f"errors {sum(self.errors.values())}")
        self.stream.write(("\r" + line.ljust(100)) if self.tty else line + "\n")
        self.stream.flush()
        self._last_print, self._last_sent = now, sent
        self.latencies.clear()

    def finish(self) -> None:
        if self.tty and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
