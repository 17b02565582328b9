"""The Locust engine on real Locust processes: same scenarios, same rows, same summary."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

from target_server.ports import free_port
from tests.support import ROOT
from tests.support.cli import HarnessProcess, assert_all_gone, assert_exit, complete_rows, harness, wait_until
from tests.support.rawserver import OK_JSON, HeldPort, RawServer, respond_forever
from tests.support.server_fixtures import start_server

pytestmark = pytest.mark.e2e


def scenario(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.yaml"
    path.write_text("# a test scenario\n" + text)
    return path


CLOSED = """
name: locust-closed
target:
  server: {model: linear, workers: 1, worker_class: gthread, threads: 4}
engine: locust
load:
  model: closed
  stages: [{duration: 1s, target: 3}, {duration: 3s, target: 3}]
  warmup: 1s
thresholds: [error_rate < 0.01]
"""


def locust_pids(run_dir: Path) -> set[int]:
    pids = set()
    for line in (run_dir / "resources.csv").read_text().splitlines()[1:]:
        parts = line.split(",")
        if parts[1] == "generator":
            pids.add(int(parts[2]))
    return pids


def test_closed_model_run_through_locust(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = harness("run", str(scenario(tmp_path, CLOSED)), "--out", str(out))
    assert result.returncode == 0, result.stderr + result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["engine"] == "locust" and summary["valid"] and summary["passed"]
    assert summary["requests"] > 100 and summary["errors"] == 0
    assert summary["server_timing"]["infer_ms_p50"] > 0  # Server-Timing read from Locust's responses
    # Locust's own outputs are kept beside the harness's rows
    for name in ("locust_stats.csv", "locust.html", "samples-0.csv", "locust-status.json"):
        assert (out / name).exists(), name
    assert locust_pids(out), "Locust processes were monitored as the generator"
    assert json.loads((out / "locust-status.json").read_text())["cpu_warning"] is False
    assert_all_gone(out)


def test_distributed_workers_deliver_their_rows_through_the_master(tmp_path: Path) -> None:
    """Locust's default web (8089) and master (5557) ports are held while the run goes on: the
    master and its workers take kernel-chosen ports instead."""
    out = tmp_path / "run"
    with HeldPort(8089), HeldPort(5557):
        result = harness("run", str(scenario(tmp_path, CLOSED)), "--out", str(out), "--quiet",
                         "--set", "locust.workers=2", "--set", "load.stages[0].target=4",
                         "--set", "load.stages[1].target=4")
    assert result.returncode == 0, result.stderr + result.stdout
    files = sorted(p.name for p in out.glob("samples-*.csv"))
    assert files == ["samples-0.csv", "samples-1.csv"]
    df = pd.concat(pd.read_csv(out / name) for name in files)
    assert set(df["gen"]) == {0, 1}
    assert min(df.groupby("gen").size()) > 50  # both workers sent load
    summary = json.loads((out / "summary.json").read_text())
    assert summary["generator_processes"] == 2 and summary["requests"] > 100
    assert len(locust_pids(out)) == 3  # master + 2 workers
    assert_all_gone(out)


def remote_worker(plan: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """A worker started by hand as the README says for another machine (here: this one)."""
    from harness.engines.locust_bridge import LOCUSTFILE

    env = {**os.environ, "HARNESS_LOCUST_PLAN": str(plan)}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker",
                                 "--master-host", "127.0.0.1", "--master-port", str(port)], cwd=plan.parent,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def test_remote_workers_are_awaited_on_the_fixed_master_port(tmp_path: Path) -> None:
    """`remote_workers: 1` with `master_host`/`master_port`: the run waits for a worker started by
    hand with the printed command, whose rows then arrive through the master."""
    text = CLOSED + "locust: {workers: 1, remote_workers: 1, master_host: 127.0.0.1, master_port: PORT}\n"
    for attempt in range(3):  # the port must be fixed in the scenario: retry if someone took it first
        port = free_port()
        out = tmp_path / f"run-{attempt}"
        worker = None
        with HarnessProcess("run", str(scenario(tmp_path, text.replace("PORT", str(port)))), "--out",
                            str(out)) as proc:
            try:
                wait_until(lambda: "waiting for 1 remote Locust worker" in proc.stderr, 90,
                           "the master to wait for its remote worker", proc=proc)
                command = re.search(r"HARNESS_LOCUST_PLAN=locust-plan.json python -m locust -f (\S+) --worker "
                                    r"--master-host .+? --master-port (\d+)", proc.stderr)
                assert command and int(command.group(2)) == port, proc.stderr
                elsewhere = tmp_path / f"worker-{attempt}"  # "copy locust-plan.json there"
                elsewhere.mkdir()
                shutil.copy(out / "locust-plan.json", elsewhere / "locust-plan.json")
                worker = remote_worker(elsewhere / "locust-plan.json", port, elsewhere / "worker.log")
                code = proc.wait(120)
                if code == 3 and "in use" in (out / "locust.log").read_text(errors="replace"):
                    continue
                assert code == 0, proc.output_tail() + (elsewhere / "worker.log").read_text()[-2000:]
                assert worker.wait(timeout=30) == 0  # the master told it to quit
            finally:
                if worker is not None and worker.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait(timeout=10)
        break
    else:
        pytest.fail("the master port was taken three times in a row")
    df = pd.concat(pd.read_csv(path) for path in sorted(out.glob("samples-*.csv")))
    assert set(df["gen"]) == {0, 1} and min(df.groupby("gen").size()) > 20  # the local and the remote worker
    summary = json.loads((out / "summary.json").read_text())
    assert summary["valid"] and summary["errors"] == 0
    assert_all_gone(out)


def test_open_model_sends_every_planned_arrival(tmp_path: Path) -> None:
    text = """
name: locust-open
target:
  server: {model: sleep, sleep_ms: 5, workers: 1, worker_class: gthread, threads: 8}
engine: locust
load: {model: open, arrival: constant, start: 100, stages: [{duration: 4s, target: 100}], max_in_flight: 32}
"""
    out = tmp_path / "run"
    result = harness("run", str(scenario(tmp_path, text)), "--out", str(out), "--quiet")
    assert_exit(result, 0, out)
    summary = json.loads((out / "summary.json").read_text())
    acc = summary["accounting"]
    assert acc["planned"] == 400 == acc["completed"]  # constant arrivals: exactly rate x duration
    assert summary["load_model"] == "open" and summary["latency_ms"]["p50"] >= 5.0
    assert_all_gone(out)


def test_engine_parity_on_the_sleep_model(tmp_path: Path) -> None:
    """Both engines measure the same thing: 8 users on 8 server threads sleeping 50 ms. What must
    hold on any machine: a client never sees less than the server's own handler time, which is at
    least the 50 ms sleep; 8 users waiting 50 ms each cannot exceed 160 req/s; and the client's
    overhead stays well below the model's time. (How close each engine gets is measured and printed
    by benchmarks/, not asserted here.)"""
    text = """
name: parity
target:
  server: {model: sleep, sleep_ms: 50, workers: 1, worker_class: gthread, threads: 8}
load:
  model: closed
  start: 8
  stages: [{duration: 6s, target: 8}]
  warmup: 1s
"""
    path = scenario(tmp_path, text)
    ceiling = 8 / 0.050  # req/s: each user's request holds one of 8 threads for at least 50 ms
    for engine in ("threadpool", "locust"):
        out = tmp_path / engine
        result = harness("run", str(path), "--out", str(out), "--quiet", "--set", f"engine={engine}")
        assert result.returncode == 0, result.stderr + result.stdout
        summary = json.loads((out / "summary.json").read_text())
        p50, server_p50 = summary["latency_ms"]["p50"], summary["server_timing"]["server_ms_p50"]
        figures = (engine, summary["rps"], p50, server_p50)
        assert summary["errors"] == 0 and summary["requests"] > 0, figures
        assert 50.0 <= server_p50 <= p50, figures
        assert summary["rps"] <= ceiling * 1.05, figures  # 5%: requests straddling the window's edges
        assert p50 < 2 * server_p50, figures  # the client adds overhead, not a second model's time
        assert_all_gone(out)


def test_plain_locust_with_defaults_against_the_bundled_server(tmp_path: Path) -> None:
    """`locust -f locustfiles/inference.py --host URL` works without the harness (article payload)."""
    with start_server(["--model", "linear", "--workers", "1"]) as server:
        proc = subprocess.Popen([sys.executable, "-m", "locust", "-f", str(ROOT / "locustfiles" / "inference.py"),
                                 "--host", server.url, "--headless", "-u", "2", "-r", "2", "-t", "3s",
                                 "--csv", str(tmp_path / "plain")], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, cwd=tmp_path, start_new_session=True)
        try:
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        assert proc.returncode == 0, stderr.decode(errors="replace")[-2000:]
    stats = (tmp_path / "plain_stats.csv").read_text().splitlines()
    row = next(line for line in stats if line.startswith("POST,/predict"))
    requests, failures = int(row.split(",")[2]), int(row.split(",")[3])
    assert requests > 50 and failures == 0


LONG = ("name: long\ntarget: {endpoint: /x}\nengine: locust\nlocust: {workers: 1}\n"
        "load: {model: closed, start: 2, warmup: 0s, stages: [{duration: 60s, target: 2}]}\n")


def locust_children(proc: HarnessProcess) -> list[psutil.Process]:
    children = [p for p in proc.descendants() if "locust" in " ".join(p.cmdline())]
    return children if len(children) >= 2 else []  # Locust master + worker


def test_locust_processes_exit_when_the_harness_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        with HarnessProcess("run", str(scenario(tmp_path, LONG)), "--url", f"http://127.0.0.1:{server.port}",
                            "--out", str(out), "--quiet") as proc:
            wait_until(lambda: complete_rows(out / "samples-0.csv") > 0, 90, "sample rows", proc=proc)
            children = wait_until(lambda: locust_children(proc), 30, "Locust master and worker", proc=proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            gone, alive = psutil.wait_procs(children, timeout=15)
            assert not alive, f"Locust outlived the harness: {alive}"
    lines = (out / "samples-0.csv").read_text().splitlines(keepends=True)
    assert len(lines) > 1 and lines[-1].endswith("\n")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_and_sigterm_with_the_locust_engine(tmp_path: Path, sig: int) -> None:
    """Stopped mid-load: exit 130, a partial summary of what ran, Locust's master and worker gone."""
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        with HarnessProcess("run", str(scenario(tmp_path, LONG)), "--url", f"http://127.0.0.1:{server.port}",
                            "--out", str(out), "--quiet") as proc:
            wait_until(lambda: complete_rows(out / "samples-0.csv") >= 20, 90, "sample rows", proc=proc)
            children = wait_until(lambda: locust_children(proc), 30, "Locust master and worker", proc=proc)
            proc.send_signal(sig)
            assert proc.wait(60) == 130, proc.output_tail()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["partial"] and summary["requests"] >= 20
    assert summary["engine"] == "locust" and summary["duration_s"] < 60
    gone, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"Locust outlived the run: {alive}"
    # Locust shut down cleanly, not killed: the master ran its quitting handlers and told its worker
    assert (out / "locust-status.json").exists() and (out / "locust.html").exists()
    assert "Got quit message from master" in (out / "locust-worker-0.log").read_text()
    assert_all_gone(out)


def test_locust_cpu_warning_marks_the_run_invalid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Locust's CPU monitor needs 10 s above 90% to fire, so the warning is simulated: after Locust
    wrote its status (locustfile.py, at quitting), the test rewrites it as Locust writes it when the
    warning fired. The rest is the real path, in this process: harness run reads it, the summary
    marks the run invalid, exit 3."""
    from harness import cli
    from harness.engines.locust_bridge import LocustProcesses

    real_close = LocustProcesses.close
    written: list[dict] = []

    def close_then_warn(self: LocustProcesses, timeout: float) -> None:
        real_close(self, timeout)
        status = self.run_dir / "locust-status.json"
        if status.exists() and not written:
            doc = json.loads(status.read_text())
            written.append(dict(doc))
            status.write_text(json.dumps({**doc, "cpu_warning": True}))

    monkeypatch.setattr(LocustProcesses, "close", close_then_warn)
    path = scenario(tmp_path, "name: warned\ntarget: {endpoint: /x}\nengine: locust\n"
                              "load: {model: closed, start: 2, warmup: 0s, stages: [{duration: 2s, target: 2}]}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        code = cli.main(["run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet"])
    assert written and written[0]["cpu_warning"] is False  # Locust itself had written its status
    assert code == 3, capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["valid"] and summary["requests"] > 0
    assert any("Locust reported a generator process above 90% CPU" in r for r in summary["invalid_reasons"])
    assert_all_gone(out)
