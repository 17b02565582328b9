"""A real Prometheus scrapes a run's live metrics and the bundled server: every query of the
shipped Grafana dashboard returns data, and Prometheus's request count matches summary.json."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.cli import HarnessProcess, assert_all_gone
from tests.support.rawserver import dead_port

DASHBOARD = ROOT / "observability" / "grafana-dashboard.json"
SCRAPE_S = 1.0
SCENARIO = """
name: live
target:
  server: {model: sleep, sleep_ms: 5, worker_class: gthread, threads: 4}
load:
  start: 4
  stages: [{duration: 14s, target: 4}]
  warmup: 2s
"""


@dataclass
class Prometheus:
    url: str
    targets: Path  # file_sd targets of the `server` job

    def query_range(self, expr: str, start: float, end: float) -> list[dict]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}", timeout=10) as response:
            doc = json.loads(response.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the shipped dashboard, with its $run variable meaning every run."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"].replace("$run", ".*") for p in panels for t in p.get("targets", [])]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("Prometheus is not installed: run scripts/install-prometheus.sh (scripts/install.sh --dev does)")
    harness_port, port = dead_port(), dead_port()
    targets = tmp_path / "server.json"
    targets.write_text("[]")
    config = tmp_path / "prometheus.yml"
    config.write_text(f"""
global: {{scrape_interval: {SCRAPE_S:g}s, evaluation_interval: {SCRAPE_S:g}s}}
scrape_configs:
  - job_name: harness
    static_configs: [{{targets: ["127.0.0.1:{harness_port}"]}}]
  - job_name: server
    file_sd_configs: [{{files: ["{targets}"], refresh_interval: 1s}}]
""")
    proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp_path / "prometheus.log", "wb"), start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        yield Prometheus(url, targets), harness_port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.e2e
def test_prometheus_scrapes_the_run_and_every_dashboard_query_has_data(
        prometheus: tuple[Prometheus, int], tmp_path: Path) -> None:
    prom, harness_port = prometheus
    scenario = tmp_path / "live.yaml"
    scenario.write_text(SCENARIO)
    out = tmp_path / "run"
    started = time.time()
    with HarnessProcess("run", str(scenario), "--out", str(out), "--metrics-port", str(harness_port)) as run:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"target: http://127\.0\.0\.1:(\d+) \(bundled, ready\)", run.stderr)):
            assert run.poll() is None and time.monotonic() < deadline, run.output_tail()
            time.sleep(0.1)
        fresh = prom.targets.with_suffix(".tmp")
        fresh.write_text(json.dumps([{"targets": [f"127.0.0.1:{found.group(1)}"]}]))
        fresh.replace(prom.targets)  # Prometheus watches the file and starts scraping the server
        assert run.wait(90) == 0, run.output_tail()
        assert f"live metrics: http://127.0.0.1:{harness_port}/metrics" in run.stderr
    assert_all_gone(out)
    time.sleep(SCRAPE_S * 2)  # the last scrape is stored
    end = time.time()

    empty = []
    for expr in dashboard_queries():
        if "harness_gpu_" in expr:
            continue  # GPU panels have data only with an NVIDIA driver; this machine has none
        series = prom.query_range(expr, started, end)
        if not any(v != "NaN" for s in series for _, v in s["values"]):
            empty.append(expr)
    assert not empty, f"dashboard queries without data: {empty}"

    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accounting"]
    ended = acc["completed"] + acc["failed"] + acc["timed_out"]  # every request with a row, warm-up included
    series = prom.query_range("sum(harness_requests_total)", started, end)
    counted = max(float(v) for _, v in series[0]["values"])
    assert abs(counted - ended) <= summary["rps"] * SCRAPE_S, (counted, ended)
