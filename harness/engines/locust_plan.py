"""What the harness hands to Locust (a plan file) and what comes back (sample rows), Locust side.

The harness never imports locust; it writes a JSON plan file, names it in HARNESS_LOCUST_PLAN and
starts Locust as a subprocess. Rows use the harness's sample schema. Times are kept relative to
each process's own test start (monotonic) plus that start's wall-clock time, so the master can
put rows from workers on other hosts onto its own timeline.
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.engines.http_client import parse_server_timing
from harness.scenario.plan import LoadPlan
from harness.results.samples import HEADER, HTTP_ERROR, NOT_SENT

PLAN_ENV = "HARNESS_LOCUST_PLAN"
PARENT_ENV = "HARNESS_PARENT_PID"  # set only on Locust processes the harness starts itself
ARTICLE_BODY = '{"inputs": [[1.0, 2.0, 3.0]]}'


@dataclass
class Bridge:
    """The plan file's contents, with defaults that make plain `locust -f ... --host URL` useful."""

    mode: str = "ui"  # closed | open | ui (users set by hand in the web UI)
    endpoint: str = "/predict"
    method: str = "POST"
    bodies: list[str] = field(default_factory=lambda: [ARTICLE_BODY])
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})
    timeout: float = 10.0
    plan: dict[str, Any] | None = None
    max_in_flight: int = 256
    workers: int = 1
    run_dir: str | None = None

    @classmethod
    def from_environment(cls) -> "Bridge":
        path = os.environ.get(PLAN_ENV)
        if not path:
            return cls()
        return cls(**json.loads(Path(path).read_text()))

    def load_plan(self) -> LoadPlan | None:
        if self.plan is None:
            return None
        p = self.plan
        return LoadPlan.from_stages(p["model"], [tuple(s) for s in p["stages"]], start=p["start"],
                                    warmup=p["warmup"], arrival=p["arrival"], seed=p["seed"])


class Clock:
    """One process's test start: monotonic for intervals, wall time to align processes."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.mono = time.monotonic()
        self.wall = time.time()

    def now(self) -> float:
        return time.monotonic() - self.mono


def classify(status: int, error: BaseException | None) -> str:
    """The harness's error kinds for a FastHttpUser response."""
    if status >= 400:
        return HTTP_ERROR
    if error is None and status > 0:
        return ""
    name = type(error).__name__.lower() if error is not None else ""
    if isinstance(error, (socket.timeout, TimeoutError)) or "timeout" in name:
        return "timeout"
    if isinstance(error, ConnectionRefusedError):
        return "connect"
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return "reset"
    if "closed" in name:
        return "closed"
    return "protocol"


def response_row(intended: float, start: float, end: float, response: Any, stage: int, gen: int) -> tuple:
    status = int(getattr(response, "status_code", 0) or 0)
    error = classify(status, getattr(response, "error", None))
    size = 0
    if status:
        try:
            size = len(response.content or b"")
        except Exception:  # a body that failed to arrive is already counted as the error
            size = 0
    timing = None
    headers = getattr(response, "headers", None)
    if status and headers:
        value = headers.get("Server-Timing") or headers.get("server-timing")
        timing = parse_server_timing(value.encode("latin-1")) if value else None
    queue, infer, total = timing if timing else (None, None, None)
    return (intended, start, end, status, error, size, stage, gen, queue, infer, total)


def not_sent_row(intended: float, stage: int, gen: int) -> tuple:
    return (intended, None, None, 0, NOT_SENT, 0, stage, gen, None, None, None)


def shift(row: tuple, offset: float) -> tuple:
    """Move a row from a worker's timeline onto the master's (offset = worker start - master start)."""
    intended, start, end, *rest = row
    return (intended + offset, None if start is None else start + offset,
            None if end is None else end + offset, *rest)


class RelayedSamples:
    """A worker's sample file on the master: whole CSV lines as they arrive, one write each."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, HEADER.encode())

    def write(self, text: str) -> None:
        if text:
            os.write(self._fd, text.encode())

    def close(self) -> None:
        os.close(self._fd)
