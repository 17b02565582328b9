"""Response checks end to end in both engines: against a server that answers every 4th request with a
200 whose body is an error, the failed checks are counted exactly (all of them, or exactly the
sampled ones), named row by row in checks-<gen>.csv, and counted in the error rate and thresholds."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pandas as pd
import pytest

from harness.scenario.expect import Checker, resolve
from harness.scenario.loading import load_scenario
from tests.support.cli import harness
from tests.support.rawserver import RawServer, read_request

pytestmark = pytest.mark.e2e

GOOD = b'{"predictions": [[0.5]]}'
BAD = b'{"error": "model overloaded"}'  # a 200 whose body is an error message


class EveryFourthWrong:
    """Answers load requests in arrival order; request k (0-based) gets BAD when k % 4 == 3."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> None:
        while raw := read_request(sock):
            if raw.split(b" ", 2)[1] != b"/predict":  # the /metrics probe
                sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                continue
            with self.lock:
                k = self.count
                self.count += 1
            body = BAD if k % 4 == 3 else GOOD
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                         % len(body) + body)


@pytest.mark.parametrize(("engine", "workers", "sample"), [
    ("threadpool", 0, 1.0), ("threadpool", 0, 0.5), ("locust", 0, 1.0), ("locust", 0, 0.5),
    ("locust", 1, 1.0),  # a worker: rows and reasons reach the master's files over Locust's messages
])
def test_failed_checks_are_counted_exactly_and_explained(tmp_path: Path, engine: str, workers: int,
                                                          sample: float) -> None:
    path = tmp_path / "checked.yaml"
    path.write_text(f"name: checked\nengine: {engine}\nlocust: {{workers: {workers}}}\n"
                    f"target: {{url: 'http://127.0.0.1:9', expect: {{json_path: predictions, sample: {sample}, "
                    "seed: 7}}\n"
                    "load: {model: closed, start: 1, stages: [{duration: 1s, target: 1}]}\n"
                    "thresholds: ['error_rate < 0.01']\n")
    out = tmp_path / "run"
    server = EveryFourthWrong()
    with RawServer(server) as raw:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{raw.port}", "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr  # the threshold failed on the checks

    rows = pd.read_csv(out / "samples-0.csv", keep_default_na=False)  # file order: the row numbers
    in_order = rows.sort_values("start", kind="stable")
    assert len(rows) > 20 and (rows["status"] == 200).all()
    # one user, one connection: the k-th request sent is the server's k-th; replay the seeded sample
    checker = Checker(resolve(load_scenario(path)[0]), 0)  # type: ignore[arg-type]
    sampled = [checker.wants_body() for _ in range(len(rows))]  # drawn once per request, checked or not
    expected = [s and k % 4 == 3 for k, s in enumerate(sampled)]
    if sample < 1:
        assert 0 < sum(expected) < sum(k % 4 == 3 for k in range(len(rows)))
    assert (in_order["error"] == "check").tolist() == expected
    assert set(rows["error"]) <= {"", "check"}

    checks = pd.read_csv(out / "checks-0.csv", keep_default_na=False)
    assert len(checks) == sum(expected)
    assert (rows.loc[checks["row"] - 1, "error"] == "check").all()
    assert (checks["reason"] == "no 'predictions' in body").all()

    summary = json.loads((out / "summary.json").read_text())
    measured = rows[rows["intended"] < summary["duration_s"]]  # a Locust user may start one more after the end
    failed = int((measured["error"] == "check").sum())
    assert summary["errors_by_kind"] == {"check": failed} and summary["requests"] == len(measured)
    assert summary["error_rate"] == pytest.approx(failed / len(measured), abs=1e-6)
    assert any(note.startswith(f"{sum(expected)} response(s) failed their checks") for note in summary["notes"])
