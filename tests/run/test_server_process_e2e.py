"""A server the harness did not start (a master with a forked worker, like gunicorn): found by pid,
by command line and by its port; its CPU and memory rows land in resources.csv and the report."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.support import ROOT, SMOKE
from tests.support.cli import harness

PREFORK = ROOT / "tests" / "support" / "prefork_server.py"


@dataclass
class Prefork:
    master: int
    worker: int
    port: int
    marker: str


@pytest.fixture
def prefork() -> Iterator[Prefork]:
    marker = f"prefork-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen([sys.executable, str(PREFORK), marker], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("listening "), line
        children = psutil.Process(proc.pid).children()
        assert len(children) == 1
        yield Prefork(proc.pid, children[0].pid, int(line.split()[1]), marker)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def run_against(server: Prefork, out: Path, *sets: str) -> str:
    args = ["run", str(SMOKE), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
            "--set", "thresholds=[error_rate < 0.01]"]
    for item in sets:
        args += ["--set", item]
    result = harness(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def assert_server_rows(server: Prefork, out: Path) -> None:
    rows = pd.read_csv(out / "resources.csv")
    master, worker = rows[rows["role"] == "server"], rows[rows["role"] == "server_worker"]
    assert set(master["pid"]) == {server.master} and set(worker["pid"]) == {server.worker}
    assert worker["cpu_percent"].max() > 0 and worker["rss_bytes"].min() > 1_000_000
    page = (out / "report.html").read_text()
    assert f"worker {server.worker}" in page and "requests per CPU-second" in page


@pytest.mark.e2e
def test_found_by_pid(prefork: Prefork, tmp_path: Path) -> None:
    output = run_against(prefork, tmp_path / "run", f"target.process.pid={prefork.master}")
    assert f"server resources: pid {prefork.master}" in output
    assert_server_rows(prefork, tmp_path / "run")


@pytest.mark.e2e
def test_found_by_command_line(prefork: Prefork, tmp_path: Path) -> None:
    output = run_against(prefork, tmp_path / "run", f"target.process.match={prefork.marker}")
    assert f"the process whose command line matches '{prefork.marker}'" in output
    assert_server_rows(prefork, tmp_path / "run")


@pytest.mark.e2e
def test_found_by_its_port_without_being_told(prefork: Prefork, tmp_path: Path) -> None:
    output = run_against(prefork, tmp_path / "run")
    assert f"server resources: pid {prefork.master} " in output and f"found listening on port {prefork.port}" in output
    assert_server_rows(prefork, tmp_path / "run")
    summary = (tmp_path / "run" / "summary.json").read_text()
    assert f"found listening on port {prefork.port}" in summary
