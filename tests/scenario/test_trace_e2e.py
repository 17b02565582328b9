"""Trace replay end to end in both engines: every row's intended send time is the trace's offset ÷
speed, each arrival sent once, and the summary's offered rate is the trace's own."""
from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.cli import assert_exit, harness
from tests.support.rawserver import OK_JSON, RawServer, read_request, respond_forever

pytestmark = pytest.mark.e2e

# irregular recorded times (absolute, in ms), written out of order: a burst, a gap, a trickle
RECORDED_MS = [1_000_000 + ms for ms in (0, 5, 10, 15, 20, 300, 310, 900, 1200, 1210, 1220, 1500, 2000, 2400)]


@pytest.mark.parametrize(("engine", "processes"), [("threadpool", 1), ("threadpool", 2), ("locust", 1)])
def test_intended_times_are_the_trace_offsets_divided_by_speed(tmp_path: Path, engine: str, processes: int) -> None:
    shuffled = RECORDED_MS[7:] + RECORDED_MS[:7]
    (tmp_path / "trace.jsonl").write_text("".join(json.dumps({"ts": t, "prompt": "hi"}) + "\n" for t in shuffled))
    speed = 2.0
    path = tmp_path / "replay.yaml"
    path.write_text(f"name: replay\nengine: {engine}\ntarget: {{endpoint: /x, timeout: 5s}}\n"
                    f"generator: {{processes: {processes}}}\n"
                    f"load: {{max_in_flight: 16, trace: {{path: trace.jsonl, time_field: ts, unit: ms, speed: {speed}}}}}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out))
    assert_exit(result, 0, out)  # what was sent is the subject, not the generator's timeliness
    assert "replayed in time order" in result.stderr  # the sorting note, said at the start ...

    expected = (np.array(sorted(RECORDED_MS)) - min(RECORDED_MS)) / 1000.0 / speed
    df = pd.concat(pd.read_csv(p) for p in sorted(out.glob("samples-*.csv"))).sort_values("intended")
    assert df["error"].isna().all(), df
    np.testing.assert_allclose(df["intended"].to_numpy(), expected, atol=2e-6)
    assert (df["end"] >= df["intended"]).all()
    if processes == 2:  # arrival k of the trace went to generator k % 2
        np.testing.assert_array_equal(df["gen"].to_numpy(), np.arange(len(expected)) % 2)

    summary = json.loads((out / "summary.json").read_text())
    assert any("replayed in time order" in note for note in summary["notes"])  # ... and kept in the summary
    assert summary["accounting"]["planned"] == len(expected) == summary["accounting"]["completed"]
    assert summary["stages"][0]["description"].startswith(f"trace replay: {len(expected)} arrivals")


def test_a_killed_trace_runs_summary_is_rebuilt_from_the_trace(tmp_path: Path) -> None:
    """`harness report` on a run folder without summary.json re-reads the trace its scenario.yaml
    names (by absolute path), so the rebuilt summary has the trace's plan."""
    (tmp_path / "trace.csv").write_text("timestamp\n" + "".join(f"{t}\n" for t in (0, 0.1, 0.2, 0.6, 0.9)))
    path = tmp_path / "replay.yaml"
    path.write_text("name: replay\ntarget: {endpoint: /x}\nload: {trace: {path: trace.csv}}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        first = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
    assert_exit(first, 0, out)
    (out / "summary.json").unlink()
    rebuilt = harness("report", str(out))
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"][0]["description"].startswith("trace replay: 5 arrivals")
    assert summary["partial"] and summary["duration_s"] <= 1.125  # the trace's own length bounds it


class Recorder:
    """Answers every /x request and records each connection's request bodies in arrival order."""

    def __init__(self) -> None:
        self.by_connection: list[list[bytes]] = []

    def __call__(self, sock: socket.socket) -> None:
        seen: list[bytes] = []
        self.by_connection.append(seen)
        while raw := read_request(sock):
            if raw.split(b" ", 2)[1] == b"/x":
                seen.append(raw.partition(b"\r\n\r\n")[2])
            sock.sendall(OK_JSON)


@pytest.mark.parametrize(("engine", "processes"), [("threadpool", 1), ("threadpool", 2), ("locust", 1)])
def test_each_arrival_sends_its_own_lines_body(tmp_path: Path, engine: str, processes: int) -> None:
    """With body_field, arrival k sends trace line k's body (in time order). One request in flight
    per generator, so each connection's order is its generator's: all of them with one, every
    other one (k = g, g + 2, ...) with two."""
    lines = [{"ts": (11 - k) / 20, "req": {"inputs": [[float(11 - k)]]}} for k in range(12)]  # written backwards
    (tmp_path / "trace.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in lines))
    path = tmp_path / "bodies.yaml"
    path.write_text(f"name: bodies\nengine: {engine}\ntarget: {{endpoint: /x}}\ngenerator: {{processes: {processes}}}\n"
                    f"load: {{max_in_flight: {processes}, trace: {{path: trace.jsonl, time_field: ts, body_field: req}}}}\n")
    recorder = Recorder()
    with RawServer(recorder) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(tmp_path / "run"))
    assert_exit(result, 0, tmp_path / "run")
    expected = [json.dumps({"inputs": [[float(k)]]}, separators=(",", ":")).encode() for k in range(12)]
    sequences = sorted((s for s in recorder.by_connection if s), key=lambda s: s[0])
    assert sequences == [expected[g::processes] for g in range(processes)]
