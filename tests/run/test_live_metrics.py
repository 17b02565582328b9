"""The live metrics endpoint: counts from the sample rows as they are written, gauges, and its port."""
from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest

from harness.errors import UserError
from harness.results.samples import HEADER
from harness.run.live_metrics import LiveMetrics
from harness.scenario.plan import LoadPlan
from tests.support.rawserver import dead_port


def row(intended: float, end: float, status: int, error: str = "", stage: int = 0) -> str:
    return f"{intended},{intended},{end},{status},{error},20,{stage},0,,,,,,\n"


def scrape(live: LiveMetrics) -> dict[str, float]:
    with urllib.request.urlopen(live.url, timeout=5) as response:
        text = response.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def test_rows_become_counters_histograms_and_gauges(tmp_path: Path) -> None:
    samples = tmp_path / "samples-0.csv"
    samples.write_text(HEADER + row(0.1, 0.12, 200) + row(0.2, 0.25, 500, "http") + row(0.3, 0.3, 0, "connect"))
    plan = LoadPlan.from_stages("open", [(10.0, 50.0)], start=50.0)
    cpu = {"generator": 35.0, "server": 140.0}
    live = LiveMetrics(dead_port(), tmp_path, "demo", plan, t0=0.0, cpu_of=cpu.get)
    try:
        live.update()
        with samples.open("a") as f:
            f.write(row(0.4, 0.41, 200) + "0.5,0.5,0.6")  # a torn last line is not read yet
        live.update()
        got = scrape(live)
    finally:
        live.stop(linger=0)
    key = 'harness_requests_total{error_kind="%s",run="demo",stage="0",status="%s"}'
    assert got[key % ("ok", "200")] == 2 and got[key % ("http", "500")] == 1 and got[key % ("connect", "0")] == 1
    assert got['harness_request_latency_seconds_count{run="demo",stage="0"}'] == 3  # responses only
    assert got['harness_request_latency_seconds_bucket{le="0.025",run="demo",stage="0"}'] == 2
    assert got['harness_offered_load{run="demo",unit="req/s"}'] == 50.0
    assert got['harness_process_cpu_percent{role="server",run="demo"}'] == 140.0
    with pytest.raises(OSError):  # stopped: the port is closed again
        socket.create_connection(("127.0.0.1", int(live.url.split(":")[2].split("/")[0])), timeout=1).close()


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"--metrics-port {port}: cannot listen on 127.0.0.1:{port}"):
            LiveMetrics(port, tmp_path, "demo", LoadPlan.from_stages("closed", [(1.0, 1.0)]), 0.0, lambda _: None)
