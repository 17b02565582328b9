"""The Locust plan file (written by the harness, read by the locustfile) and Locust's sample rows.

The harness never imports locust; it writes a JSON plan file, names it in HARNESS_LOCUST_PLAN and
starts Locust as a subprocess. Rows use the harness's sample schema. Times are kept relative to
each process's own test start (monotonic) plus that start's wall-clock time, so the master can
put rows from workers on other hosts onto its own timeline.
"""
from __future__ import annotations

import json
import os
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.results import layout
from harness.results.samples import (
    CLOSED,
    CONNECT,
    HTTP_ERROR,
    OK,
    PROTOCOL,
    RESET,
    TIMEOUT,
    TLS,
    Sample,
    parse_server_timing,
)
from harness.scenario import expect
from harness.scenario.plan import LoadPlan

if TYPE_CHECKING:
    from harness.engines.tls import ClientTLS
    from harness.scenario.schema import Scenario

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
    tls: dict[str, Any] | None = None  # ClientTLS.to_dict() for an https target
    expect: dict[str, Any] | None = None  # response checks (harness.scenario.expect.resolve)
    dataset: dict[str, Any] | None = None  # request_table.DatasetSource.to_dict(): each process reads its share
    request_id: list[str] | None = None  # [header, run name]: send `<run>-<gen>-<seq>` in that header
    mix: list[dict[str, Any]] | None = None  # target.requests (mix_document)
    mix_seed: int = 0
    generative: list[Any] | None = None  # prompts.Api as a list: read answers as OpenAI streams

    @classmethod
    def from_environment(cls) -> Bridge:
        path = os.environ.get(PLAN_ENV)
        if not path:
            return cls()
        return cls(**json.loads(Path(path).read_text()))

    def load_plan(self) -> LoadPlan | None:
        return None if self.plan is None else LoadPlan.from_dict(self.plan)


def plan_document(scenario: Scenario, plan: LoadPlan, bodies: list[bytes], headers: dict[str, str],
                  run_dir: Path | None, mode: str, tls: ClientTLS | None = None,
                  model: str | None = None) -> dict[str, Any]:
    """The plan file's contents for a run (or, with mode "ui", for the web UI)."""
    target = scenario.target
    from harness.engines.request_table import dataset_source
    from harness.scenario.payload import body_headers
    from harness.scenario.prompts import api_of

    all_headers = {"Content-Type": "application/json", **body_headers(scenario), **headers} \
        if target.method == "POST" else dict(headers)
    source = dataset_source(scenario)
    rid = target.request_id
    return {
        "mode": mode, "endpoint": target.endpoint, "method": target.method,
        # latin-1 maps every byte to one character: binary bodies (v2-binary) survive the JSON file
        "bodies": [] if source is not None else [b.decode("latin-1") for b in bodies], "headers": all_headers,
        "dataset": source.to_dict() if source is not None else None,
        "request_id": [rid.header, run_dir.name if run_dir else "ui"] if rid is not None else None,
        "mix": mix_document(scenario, headers), "mix_seed": target.mix_seed,
        "timeout": target.timeout, "plan": plan.to_dict(),
        "max_in_flight": scenario.load.max_in_flight,
        "workers": max(scenario.locust.workers + scenario.locust.remote_workers, 1),
        "run_dir": str(run_dir) if run_dir else None,
        "tls": tls.to_dict() if tls is not None else None,
        "expect": expect.resolve(scenario),
        "generative": api_of(target, model or target.model or ""),
    }


def mix_document(scenario: Scenario, headers: dict[str, str]) -> list[dict[str, Any]] | None:
    """target.requests for the locustfile: each kind's request settings, bodies (latin-1) or dataset."""
    from harness.engines.request_table import dataset_source_of
    from harness.scenario.payload import source_bodies, source_headers

    target = scenario.target
    if target.requests is None:
        return None
    out = []
    for kind in target.requests:
        method = kind.method or target.method
        source = dataset_source_of(kind.dataset)
        kind_headers = {**({"Content-Type": "application/json"} if method == "POST" else {}),
                        **source_headers(kind, method), **headers, **kind.headers}
        out.append({"name": kind.name, "weight": kind.weight, "method": method,
                    "endpoint": kind.endpoint or target.endpoint, "headers": kind_headers,
                    "bodies": [] if source else [b.decode("latin-1") for b in source_bodies(kind, method, Path("."))],
                    "dataset": source.to_dict() if source else None})
    return out


def write_plan(run_dir: Path, doc: dict[str, Any]) -> Path:
    return layout.atomic_write(Path(run_dir) / layout.LOCUST_PLAN, json.dumps(doc))


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
        return OK
    name = type(error).__name__.lower() if error is not None else ""
    if isinstance(error, (socket.timeout, TimeoutError)) or "timeout" in name:
        return TIMEOUT
    if isinstance(error, ConnectionRefusedError):
        return CONNECT
    if isinstance(error, ssl.SSLError) and not isinstance(error, ssl.SSLEOFError):
        return TLS
    if isinstance(error, (ConnectionResetError, BrokenPipeError)):
        return RESET
    if "closed" in name:
        return CLOSED
    return PROTOCOL


def response_row(intended: float, start: float, end: float, response: Any, stage: int, gen: int,
                 sent: tuple[str | None, int | None, str | None] = (None, None, None)) -> Sample:
    """The row of one Locust response; `sent` is its (name, dataset line, request id)."""
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
    return Sample(intended, start, end, status, error, size, stage, gen, queue, infer, total, *sent)


def checked_row(row: Sample, response: Any, checker: expect.Checker) -> tuple[Sample, str | None]:
    """The row as the response checks judge it, and why it failed (None: it did not). Only a
    response that arrived is judged; only a sampled one hands over its body."""
    if not row.status or row.error not in (OK, HTTP_ERROR):
        return row, None
    body = (response.content or b"") if checker.wants_body() else None
    error, reason = checker.judge(row.status, body)
    return (row if error == row.error else row._replace(error=error)), reason
