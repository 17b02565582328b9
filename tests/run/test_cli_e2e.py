"""The real CLI on real processes: smoke run, exit codes, Ctrl-C, and nothing left running."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.support import ROOT, SMOKE
from tests.support.cli import assert_all_gone, harness
from tests.support.rawserver import RawServer, respond_forever

pytestmark = pytest.mark.e2e


def test_smoke_run_passes_and_writes_a_complete_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = harness("run", str(SMOKE), "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["schema_version"] == 1
    assert summary["passed"] and summary["valid"] and not summary["partial"]
    assert summary["requests"] > 100 and summary["errors"] == 0
    lat = summary["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    acc = summary["accounting"]
    assert acc["planned"] == acc["completed"] + acc["failed"] + acc["timed_out"] + acc["not_sent"]
    assert summary["server"]["workers"] and summary["generator"]["processes"]
    assert summary["server_timing"]["infer_ms_p50"] > 0
    assert {t["expression"] for t in summary["thresholds"]} == {"error_rate < 0.01", "p95_ms < 500"}
    for name in ("scenario.yaml", "samples-0.csv", "resources.csv", "server.log"):
        assert (out / name).exists(), name
    assert "throughput" in result.stdout and f"run folder: {out}" in result.stdout
    assert_all_gone(out)


def test_failed_threshold_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = harness("run", str(SMOKE), "--out", str(out), "--quiet", "--set", "thresholds=[p50_ms < 0.001]")
    assert result.returncode == 1, result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["passed"] is False and summary["thresholds"][0]["passed"] is False
    assert "FAIL" in result.stdout
    assert_all_gone(out)


def test_bad_scenario_exits_2_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("load:\n  stages:\n    - {duraton: 5s, target: 2}\n    - {duration: -1s, target: 2}\n")
    for command in ("validate", "run"):
        result = harness(command, str(bad))
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "load.stages[0].duraton: unknown key; did you mean 'duration'?" in result.stderr
        assert "load.stages[1].duration: duration must not be negative" in result.stderr
    result = harness("run", str(SMOKE), "--out", "/dev/null/run")
    assert result.returncode == 2 and "cannot create the run folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_url_exits_3_fast(tmp_path: Path) -> None:
    sock = socket.socket()  # a port nobody listens on

    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    started = time.monotonic()
    result = harness("run", str(SMOKE), "--url", f"http://127.0.0.1:{port}", "--out", str(tmp_path / "r"))
    assert result.returncode == 3, result.stderr
    assert "cannot connect to http://127.0.0.1" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30


def test_external_url_open_model_accounts_for_every_request(tmp_path: Path) -> None:
    reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    scenario = tmp_path / "open.yaml"
    scenario.write_text(
        "# Open model against an external endpoint\nname: open-ext\n"
        "target: {endpoint: /anything}\n"
        "load: {model: open, arrival: poisson, seed: 5, start: 200, stages: [{duration: 3s, target: 200}], warmup: 0s}\n")
    with RawServer(respond_forever(reply)) as server:
        out = tmp_path / "run"
        result = harness("run", str(scenario), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    planned = summary["accounting"]["planned"]
    assert summary["accounting"]["completed"] == planned == summary["requests"]
    assert 450 < planned < 750  # Poisson around 600
    assert summary["target"]["bundled"] is False and summary["arrival"] == "poisson"


def test_ctrl_c_keeps_samples_writes_partial_summary_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), "--out", str(out),
                             "--set", "load.stages[1].duration=60s", "--set", "load.warmup=0s"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            samples = out / "samples-0.csv"
            if samples.exists() and samples.stat().st_size > 20_000:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["partial"] and summary["requests"] > 0
    assert summary["duration_s"] < 60
    assert "PARTIAL" in stdout
    assert_all_gone(out)


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), "--out", str(out), "--quiet",
                             "--set", "load.stages[1].duration=60s"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "samples-0.csv").exists():
            time.sleep(0.2)
        time.sleep(1.5)
        proc.terminate()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert json.loads((out / "summary.json").read_text())["interrupted"]
    assert_all_gone(out)


def test_harness_killed_leaves_intact_samples_a_report_and_no_server(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(SMOKE), "--out", str(out), "--quiet",
                             "--set", "load.stages[1].duration=60s"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "resources.csv").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_all_gone(out, within=15)
    lines = (out / "samples-0.csv").read_text().splitlines(keepends=True)
    assert len(lines) > 1 and lines[-1].endswith("\n")  # intact up to the last complete row
    assert len({line.count(",") for line in lines}) == 1  # no torn line anywhere
    assert not (out / "summary.json").exists()

    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "rebuilt" in report.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] and summary["interrupted"] and summary["requests"] > 0
    assert any("rebuilt from the samples" in n for n in summary["notes"])
    assert summary["environment"] == json.loads((out / "run.json").read_text())["environment"]
    assert "PARTIAL" in (out / "report.html").read_text().upper()
