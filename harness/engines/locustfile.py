"""Locust entry point for inference endpoints: the harness's scenarios, or plain Locust use.

    locust -f locustfiles/inference.py --host http://127.0.0.1:8000     # web UI, article payload

Driven by the harness (`engine: locust`), it reads the plan file named in HARNESS_LOCUST_PLAN:
closed model through a LoadTestShape following the stages; open model through users that send
at the plan's arrival times (constant or Poisson) and time each request from its intended send
time. Every request becomes a sample row in the harness's schema, written to the run folder by
the local runner or by the master (workers relay rows over Locust's own messages). A generative
target (target.api) is read as a stream, each piece handed to harness.engines.sse as it arrives,
and its tokens go beside its row in tokens-<gen>.csv (relayed the same way). Locust's own
statistics then time a stream to its headers; the harness's rows time it to its last byte.
"""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.ssl
from locust import FastHttpUser, LoadTestShape, constant, events, task
from locust.runners import MasterRunner, WorkerRunner

from harness.engines.http_client import RequestFailed
from harness.engines.locust_plan import PARENT_ENV, Bridge, Clock, checked_row, classify, response_row
from harness.engines.request_table import DatasetSource, Kind, Table, mix_table, request_id_prefix, table
from harness.engines.sse import OpenAIStream
from harness.engines.tls import ClientTLS
from harness.engines.web_auth import WEB_AUTH_ENV, parse_credentials, require_basic_auth
from harness.results import layout
from harness.results.checks import CheckLog
from harness.results.samples import (
    CLOSED,
    HTTP_ERROR,
    OK,
    RelayedSamples,
    Sample,
    SampleWriter,
    format_row,
    not_sent,
    shifted,
)
from harness.results.tokens import TokenLog, format_fields
from harness.scenario.dataset import Line
from harness.scenario.expect import Checker
from harness.scenario.plan import LoadPlan
from harness.scenario.prompts import Api, dataset_body

BRIDGE = Bridge.from_environment()
PLAN = BRIDGE.load_plan()
BODIES = [b.encode("latin-1") for b in BRIDGE.bodies]  # latin-1: the plan file's lossless text of bytes
SOURCE = DatasetSource(**BRIDGE.dataset) if BRIDGE.dataset else None
TLS = ClientTLS.from_dict(BRIDGE.tls) if BRIDGE.tls else None
API = Api(*BRIDGE.generative) if BRIDGE.generative else None
SPAWN_RATE = 10_000  # users per second: stage jumps happen at once, as in the threadpool engine
RELAY_INTERVAL = 0.5

CLOCK = Clock()
STATE: dict[str, Any] = {"gen": 0, "rows": [], "writer": None, "writers": {}, "arrivals": iter(()),
                         "master_wall": 0.0, "runner": None, "pending": 0, "exhausted": False,
                         "worker_pending": {}, "checker": None, "reasons": {}, "relayed_rows": {},
                         "check_logs": {}, "table": None, "claimed": 0, "id_prefix": "",
                         "seq": itertools.count(), "tokens": {}, "token_logs": {}}
ARRIVAL_LOCK = threading.Lock()  # a gevent lock after monkey-patching


def record(row: Sample, reason: str | None = None, stream: OpenAIStream | None = None) -> None:
    """Queue a row (with why its response check failed, if it did, or its stream's tokens) for the
    local file or the master."""
    writer = STATE["writer"]
    if writer is not None:
        if reason is not None:
            writer.reasons[id(row)] = reason
        if stream is not None:
            writer.tokens[id(row)] = (stream, CLOCK.mono)
        writer.append(row)
    elif isinstance(STATE["runner"], WorkerRunner):
        if reason is not None:
            STATE["reasons"][id(row)] = reason
        if stream is not None:
            STATE["tokens"][id(row)] = stream
        STATE["rows"].append(row)


def stage_at(t: float) -> int:
    return PLAN.stage_at(t) if PLAN is not None else 0


def line_request(line: Line) -> tuple[str, str, bytes, dict[str, str]]:
    """A dataset line as (method, endpoint, body, headers) for the Locust client."""
    return (line.method or BRIDGE.method, line.endpoint or BRIDGE.endpoint,
            line.body if API is None else dataset_body(API, line.body),
            {**BRIDGE.headers, **line.headers} if line.headers else BRIDGE.headers)


def request_table(part: int, parts: int) -> Table:
    """This process's requests: every fixed body, its share of the dataset, or a mix of kinds."""
    if BRIDGE.mix is not None:
        kinds = [Kind(k["name"], k["weight"],
                      [(k["method"], k["endpoint"], b.encode("latin-1"), k["headers"]) for b in k["bodies"]],
                      DatasetSource(**k["dataset"]) if k["dataset"] else None,
                      (k["method"], k["endpoint"], k["headers"])) for k in BRIDGE.mix]
        return mix_table(kinds, BRIDGE.mix_seed, part, parts, kind_line_request)
    fixed = [(BRIDGE.method, BRIDGE.endpoint, body, BRIDGE.headers) for body in BODIES]
    return table(fixed, SOURCE, part, parts, line_request)


def kind_line_request(template: tuple[str, str, dict[str, str]], line: Line) -> tuple[str, str, bytes, dict[str, str]]:
    """A mix kind's dataset line as (method, endpoint, body, headers)."""
    method, endpoint, headers = template
    return (line.method or method, line.endpoint or endpoint, line.body,
            {**headers, **line.headers} if line.headers else headers)


def send(user: FastHttpUser, intended: float, own: int) -> None:
    """Send this process's `own`-th request (harness.engines.request_table picks which)."""
    requests = STATE["table"]
    if requests is None:  # plain `locust -f`: started without a harness test_start of its own
        requests = STATE["table"] = request_table(0, 1)
    slot = requests.slot(own)
    method, endpoint, body, headers = requests.items[slot]
    line = requests.lines[slot] if requests.lines is not None else None
    name = requests.names[slot] if requests.names is not None else None
    rid = None
    if BRIDGE.request_id is not None:
        rid = f"{STATE['id_prefix']}{next(STATE['seq'])}"
        headers = {**headers, BRIDGE.request_id[0]: rid}
    if API is not None:
        send_stream(user, intended, (method, endpoint, body, headers), (name, line, rid))
        return
    start = CLOCK.now()
    response = user.client.request(method, endpoint, data=body, headers=headers,
                                   name=name or endpoint)
    end = CLOCK.now()
    row = response_row(intended, start, end, response, stage_at(intended), STATE["gen"], (name, line, rid))
    checker = STATE["checker"]
    if checker is None:
        record(row)
    else:
        record(*checked_row(row, response, checker))


def send_stream(user: FastHttpUser, intended: float, request: tuple[str, str, bytes, dict[str, str]],
                sent: tuple[str | None, int | None, str | None]) -> None:
    """A generative request: its answer read piece by piece, each token timed as it arrives."""
    assert API is not None
    method, endpoint, body, headers = request
    stream = OpenAIStream(API.streamed)
    status, size, error = 0, 0, OK
    start = CLOCK.now()
    try:
        response = user.client.request(method, endpoint, data=body,  # type: ignore[arg-type]  # bytes are sent as is
                                       headers=headers, name=sent[0] or endpoint,
                                       stream=True)
        stream.first_byte = time.monotonic()  # geventhttpclient returns once the headers are in
        status = int(response.status_code or 0)
        raw = getattr(response, "_response", None)
        if status == 0 or raw is None:
            error = classify(0, getattr(response, "error", None))
        else:
            stream.head(status)
            # an error status raised inside the client, which has read its body already
            for piece in ([response.content or b""] if status >= 400 else pieces(raw)):
                size += len(piece)
                stream.append(piece)
            stream.finish(time.monotonic())
    except RequestFailed as exc:
        error, stream.message = exc.kind, stream.message or exc.detail
    except Exception as exc:  # the body failed to arrive: cut, timed out, reset
        error, stream.message = classify(0, exc), stream.message or f"{type(exc).__name__}: {exc}"
        if error == "protocol" and stream.first_token is not None:
            error = CLOSED  # a parser error mid-body is the connection ending early
    end = CLOCK.now()
    if error == OK:
        if status >= 400 or stream.message is not None:
            error = HTTP_ERROR
        elif not stream.complete:
            error, stream.message = CLOSED, "the stream ended without a finish_reason or [DONE]"
    row = Sample(intended, start, end, status, error, size, stage_at(intended), STATE["gen"], None, None, None, *sent)
    record(row, stream=stream if status else None)


def pieces(raw: Any) -> Any:
    """A geventhttpclient response body as it arrives: read(n) waits for n bytes, so wait for one,
    then take whatever else its parser already holds."""
    while True:
        first = raw.read(1)
        if not first:
            return
        held = len(getattr(raw, "_body_buffer", b""))
        yield first + raw.read(held) if held else first


class NamedContext(gevent.ssl.SSLContext):
    """gevent's SSLContext, sending target.tls.server_name (when set) as SNI and checking the
    certificate against it, as the threadpool engine does."""

    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, server_hostname: str | None = None, **kwargs: Any) -> Any:
        return super().wrap_socket(sock, *args, server_hostname=self.server_name or server_hostname, **kwargs)


_CONTEXT: list[gevent.ssl.SSLContext] = []


def tls_context(cafile: str | None = None, **_: Any) -> gevent.ssl.SSLContext:
    """geventhttpclient's ssl_context_factory: target.tls's context, built once per process
    (the `cafile` it offers, certifi's bundle, is ignored: target.tls.ca_file decides)."""
    if not _CONTEXT:
        assert TLS is not None
        NamedContext.server_name = TLS.server_name
        _CONTEXT.append(TLS.context(NamedContext))
    return _CONTEXT[0]


class PlanUser(FastHttpUser):
    """What both user classes share: no think time, the scenario's request timeout, target.tls."""

    abstract = True
    wait_time = constant(0)
    network_timeout = BRIDGE.timeout
    connection_timeout = BRIDGE.timeout
    count = 0
    if TLS is not None:
        insecure = not TLS.verify
        ssl_context_factory = staticmethod(tls_context)


class InferenceUser(PlanUser):
    """Closed model: post the payload again as soon as the answer arrives."""

    abstract = BRIDGE.mode == "open"

    @task
    def infer(self) -> None:
        own = InferenceUser.count
        InferenceUser.count += 1
        send(self, CLOCK.now(), own)


class ScheduledUser(PlanUser):
    """Open model: each user claims the next planned arrival, waits for it, sends, repeats."""

    abstract = BRIDGE.mode != "open"

    @task
    def fire(self) -> None:
        with ARRIVAL_LOCK:
            intended = next(STATE["arrivals"], None)
            if intended is None:
                STATE["exhausted"] = True
            else:
                STATE["pending"] += 1
                own = STATE["claimed"]  # this process's count of it: its global index is gen + own * parts
                STATE["claimed"] = own + 1
        if intended is None:
            gevent.sleep(0.1)  # schedule done: idle until the shape ends the test
            return
        try:
            delay = intended - CLOCK.now()
            if delay > 0:
                gevent.sleep(delay)
            send(self, intended, own)
        finally:
            STATE["pending"] -= 1


if BRIDGE.mode in ("closed", "open") and PLAN is not None:
    SHAPE_PLAN: LoadPlan = PLAN

    class PlanShape(LoadTestShape):
        """Follow the scenario's stages (closed: users; open: a fixed pool of in-flight slots)."""

        def tick(self) -> tuple[int, float] | None:
            t = self.get_run_time()
            if BRIDGE.mode == "closed":
                return None if t >= SHAPE_PLAN.duration else (SHAPE_PLAN.users_at(t), SPAWN_RATE)
            # open model: after the last arrival, let requests still in flight finish (bounded)
            if t >= SHAPE_PLAN.duration and (open_requests_done() or t >= SHAPE_PLAN.duration + BRIDGE.timeout):
                return None
            return BRIDGE.max_in_flight, SPAWN_RATE


def open_requests_done() -> bool:
    """Every arrival of this process (or, on the master, of every worker) was sent and answered."""
    if isinstance(STATE["runner"], MasterRunner):
        reports = STATE["worker_pending"]
        return len(reports) >= BRIDGE.workers and all(
            pending == 0 and exhausted for pending, exhausted in reports.values())
    return STATE["pending"] == 0 and STATE["exhausted"]


@events.init.add_listener
def on_init(environment: Any, **_: Any) -> None:
    STATE["runner"] = environment.runner
    if isinstance(environment.runner, MasterRunner):
        environment.runner.register_message("harness_samples", on_worker_rows)
    if isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message("harness_clock", on_master_clock)
    if os.environ.get(PARENT_ENV):
        gevent.spawn(exit_with_parent, environment, int(os.environ[PARENT_ENV]))
    if os.environ.get(WEB_AUTH_ENV) and environment.web_ui is not None:
        try:
            require_basic_auth(environment.web_ui.app, *parse_credentials(os.environ[WEB_AUTH_ENV]))
        except ValueError as exc:
            raise SystemExit(f"locustfile: {exc}") from None


def exit_with_parent(environment: Any, parent_pid: int) -> None:
    """A Locust started by the harness must not outlive it (even when the harness is SIGKILLed)."""
    while os.getppid() == parent_pid:
        gevent.sleep(0.5)
    environment.runner.quit()


@events.test_start.add_listener
def on_test_start(environment: Any, **_: Any) -> None:
    if STATE.get("started") and BRIDGE.mode == "ui":
        return  # a new swarm from the web UI continues the same timeline and files
    STATE["started"] = True
    CLOCK.start()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        STATE["gen"] = max(runner.worker_index, 0)
        gevent.spawn(relay_rows, runner)
    elif BRIDGE.run_dir:
        layout.atomic_write(Path(BRIDGE.run_dir, layout.LOCUST_CLOCK), json.dumps({"t0": CLOCK.mono}))
        if isinstance(runner, MasterRunner):
            runner.send_message("harness_clock", {"wall": CLOCK.wall})  # before the spawn messages
        else:
            STATE["writer"] = SampleWriter(layout.samples_file(BRIDGE.run_dir, 0))
    parts = BRIDGE.workers if isinstance(runner, WorkerRunner) else 1
    if not isinstance(runner, MasterRunner):  # the master sends nothing
        STATE["table"] = request_table(STATE["gen"] % parts, parts)
        if BRIDGE.request_id is not None:
            STATE["id_prefix"] = request_id_prefix(BRIDGE.request_id[1], STATE["gen"])
    if PLAN is not None and BRIDGE.mode == "open":
        STATE["arrivals"] = PLAN.arrivals(STATE["gen"] % parts, parts)
    if BRIDGE.expect is not None:
        STATE["checker"] = Checker(BRIDGE.expect, STATE["gen"])


def relay_rows(runner: WorkerRunner) -> None:
    while True:
        gevent.sleep(RELAY_INTERVAL)
        flush_to_master(runner)


def on_master_clock(environment: Any, msg: Any, **_: Any) -> None:
    STATE["master_wall"] = msg.data["wall"]


def flush_to_master(runner: WorkerRunner) -> None:
    """Rows go to the master as ready-made CSV lines on its timeline: the master only writes them.

    Until the master's clock message has arrived, rows wait here."""
    text = ""
    checks: list[tuple[int, str]] = []  # (index of the row in `text`, why its check failed)
    tokens: list[tuple[int, str]] = []  # (index of the row in `text`, its token entry on the master's clock)
    if STATE["master_wall"]:
        rows, STATE["rows"] = STATE["rows"], []
        offset = CLOCK.wall - STATE["master_wall"]
        text = "".join(format_row(shifted(row, offset)) for row in rows)
        reasons, streams = STATE["reasons"], STATE["tokens"]
        if reasons:
            checks = [(i, reasons.pop(id(row))) for i, row in enumerate(rows) if id(row) in reasons]
        if streams:
            tokens = [(i, format_fields(streams.pop(id(row)), CLOCK.mono - offset))
                      for i, row in enumerate(rows) if id(row) in streams]
    runner.send_message("harness_samples", {"gen": STATE["gen"], "text": text, "pending": STATE["pending"],
                                            "exhausted": STATE["exhausted"], "checks": checks, "tokens": tokens})


def on_worker_rows(environment: Any, msg: Any, **_: Any) -> None:
    data = msg.data
    gen = int(data["gen"])
    STATE["worker_pending"][gen] = (data["pending"], data["exhausted"])
    if not BRIDGE.run_dir:
        return
    relayed = STATE["writers"].get(gen)
    if relayed is None:
        relayed = STATE["writers"][gen] = RelayedSamples(layout.samples_file(BRIDGE.run_dir, gen))
    relayed.write(data["text"])
    base = STATE["relayed_rows"].get(gen, 0)  # rows of this worker already in its file
    STATE["relayed_rows"][gen] = base + data["text"].count("\n")
    if data.get("checks"):
        log = STATE["check_logs"].get(gen)
        if log is None:
            log = STATE["check_logs"][gen] = CheckLog(layout.checks_file(layout.samples_file(BRIDGE.run_dir, gen)))
        log.write([(base + int(i) + 1, str(reason)) for i, reason in data["checks"]])
    if data.get("tokens"):
        tokens = STATE["token_logs"].get(gen)
        if tokens is None:
            tokens = STATE["token_logs"][gen] = TokenLog(layout.tokens_file(layout.samples_file(BRIDGE.run_dir, gen)))
        tokens.write_lines([(base + int(i) + 1, str(fields)) for i, fields in data["tokens"]])


@events.test_stop.add_listener
def on_test_stop(environment: Any, **_: Any) -> None:
    if PLAN is not None and BRIDGE.mode == "open":
        until = min(CLOCK.now(), PLAN.duration)
        with ARRIVAL_LOCK:
            for intended in STATE["arrivals"]:
                if intended >= until:
                    break
                record(not_sent(intended, stage_at(intended), STATE["gen"]))
    if isinstance(environment.runner, WorkerRunner):
        flush_to_master(environment.runner)


@events.quitting.add_listener
def on_quitting(environment: Any, **_: Any) -> None:
    runner = environment.runner
    for writer in [STATE["writer"], *STATE["writers"].values()]:
        if writer is not None:
            writer.close()
    STATE["writer"], STATE["writers"] = None, {}
    for log in [*STATE["check_logs"].values(), *STATE["token_logs"].values()]:
        log.close()
    STATE["check_logs"], STATE["token_logs"] = {}, {}
    if BRIDGE.run_dir and not isinstance(runner, WorkerRunner):
        status = {"cpu_warning": bool(getattr(runner, "cpu_warning_emitted", False)
                                      or getattr(runner, "worker_cpu_warning_emitted", False)),
                  "written_at": time.time()}
        layout.atomic_write(Path(BRIDGE.run_dir, layout.LOCUST_STATUS), json.dumps(status))
