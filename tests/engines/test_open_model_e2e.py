"""The open model end to end in both engines: a server that freezes cannot hide behind the generator
(latency is timed from each request's intended send time), and `generator.processes: N` splits one
plan over N generator processes."""
from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.support.cli import assert_all_gone, assert_exit, harness
from tests.support.rawserver import OK_JSON, RawServer, read_request, respond_forever

pytestmark = pytest.mark.e2e


class FreezingTarget:
    """Answers at once, except that from request `after + 1` on it holds every request until
    `freeze` seconds after that one arrived (on this process's monotonic clock), like a server
    stalled by a garbage collection or a reload. Each hold is recorded."""

    def __init__(self, after: int, freeze: float) -> None:
        self.after, self.freeze = after, freeze
        self.count = 0
        self.until: float | None = None
        self.holds: list[float] = []
        self.lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> None:
        while raw := read_request(sock):
            if raw.split(b" ", 2)[1] == b"/x":  # the load, not the /metrics probe
                now = time.monotonic()
                with self.lock:
                    self.count += 1
                    if self.until is None and self.count > self.after:
                        self.until = now + self.freeze
                    until = self.until
                if until is not None and now < until:
                    time.sleep(until - now)
                    with self.lock:
                        self.holds.append(until - now)
            sock.sendall(OK_JSON)


@pytest.mark.parametrize("engine", ["threadpool", "locust"])
def test_a_frozen_server_shows_in_the_latency_of_every_request_scheduled_during_the_freeze(
        tmp_path: Path, engine: str) -> None:
    """50 req/s with 4 requests in flight at most; the server freezes for 1 s after ~1 s. It holds
    only the 4 requests in flight; the ~46 scheduled meanwhile wait in the generator for a slot.
    Timed from the intended send time, each of those carries its wait: every arrival scheduled in
    the first half of the freeze shows at least half of it. (Timed from the actual send, as a
    closed-loop tool does, only the 4 held would.)"""
    rate, seconds, slots, freeze = 50, 4, 4, 1.0
    path = tmp_path / "freeze.yaml"
    path.write_text(f"# open model vs a freezing server\nname: freeze\nengine: {engine}\n"
                    "target: {endpoint: /x, timeout: 5s}\n"
                    f"load: {{model: open, arrival: constant, start: {rate}, warmup: 0s, max_in_flight: {slots}, "
                    f"stages: [{{duration: {seconds}s, target: {rate}}}]}}\n")
    out = tmp_path / "run"
    target = FreezingTarget(after=rate, freeze=freeze)
    with RawServer(target) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
    assert_exit(result, 0, out)  # every arrival's accounting is the subject
    assert target.until is not None and 0 < len(target.holds) <= slots  # the server itself held only these
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accounting"]
    assert acc["planned"] == rate * seconds == acc["completed"]  # every scheduled arrival was sent and answered
    assert any(f"all {slots} in-flight slots were busy" in note for note in summary["notes"]), summary["notes"]

    df = pd.concat(pd.read_csv(p) for p in sorted(out.glob("samples-*.csv")))
    latency = (df["end"] - df["intended"]).sort_values(ascending=False).to_numpy()
    waited = int((latency >= freeze / 2).sum())
    assert waited >= rate * freeze / 2 - 1, (waited, latency[:30])  # ~25 arrivals in the first half
    assert waited > len(target.holds)
    holds = sorted(target.holds, reverse=True)
    assert all(latency[k] >= holds[k] for k in range(len(holds)))  # a client sees at least the server's hold
    assert summary["latency_ms"]["max"] >= holds[0] * 1000
    lateness = (df["start"] - df["intended"]).to_numpy()
    assert (lateness >= freeze / 2).sum() >= rate * freeze / 2 - 1 - slots  # they left late, and it counted
    assert_all_gone(out)


def test_generator_processes_split_one_plan_and_account_for_every_arrival(tmp_path: Path) -> None:
    """`generator.processes: 2`: two generator processes, one samples file each, every planned
    arrival (constant: exactly rate x duration) sent once between them."""
    rate, seconds = 100, 3
    path = tmp_path / "two.yaml"
    path.write_text("# two generator processes\nname: two-gens\ntarget: {endpoint: /x}\n"
                    "generator: {processes: 2}\n"
                    f"load: {{model: open, arrival: constant, start: {rate}, warmup: 0s, "
                    f"stages: [{{duration: {seconds}s, target: {rate}}}]}}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
    assert_exit(result, 0, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generator_processes"] == 2
    assert summary["accounting"]["planned"] == rate * seconds == summary["accounting"]["completed"]
    files = sorted(p.name for p in out.glob("samples-*.csv"))
    assert files == ["samples-0.csv", "samples-1.csv"]
    frames = [pd.read_csv(out / name) for name in files]
    assert [set(f["gen"]) for f in frames] == [{0}, {1}]
    assert all(len(f) > 0 for f in frames) and sum(len(f) for f in frames) == rate * seconds
    intended = pd.concat(frames)["intended"]
    assert not intended.round(9).duplicated().any()  # each arrival sent by exactly one process
    resources = pd.read_csv(out / "resources.csv")
    assert resources.loc[resources["role"] == "generator", "pid"].nunique() == 2
    assert_all_gone(out)
