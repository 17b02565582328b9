"""The harness CLI as a subprocess, and the check that a run left no process behind."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.support import ROOT


def harness(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "harness", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def started_pids(run_dir: Path) -> set[int]:
    """Every process a run started: gunicorn master and workers (server.log), generators (resources)."""
    pids: set[int] = set()
    log = run_dir / "server.log"
    if log.exists():
        text = log.read_text()
        pids |= {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)}
        pids |= {int(p) for p in re.findall(r"Listening at: \S+ \((\d+)\)", text)}
    resources = run_dir / "resources.csv"
    if resources.exists():
        for line in resources.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) > 2 and parts[1] in ("generator", "server", "server_worker"):
                pids.add(int(parts[2]))
    return pids


def assert_all_gone(run_dir: Path, within: float = 10.0) -> None:
    pids = started_pids(run_dir)
    assert pids, "the run recorded no process ids"
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"processes left running: {alive}")
