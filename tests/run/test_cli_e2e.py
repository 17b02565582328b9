"""The real CLI on real processes: smoke run, exit codes, Ctrl-C, and nothing left running."""
from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.support import SMOKE
from tests.support.cli import (
    HarnessProcess,
    assert_all_gone,
    assert_exit,
    complete_rows,
    harness,
    started_pids,
    wait_until,
)
from tests.support.rawserver import OK_JSON, RawServer, dead_port, read_request, respond_forever

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
    """Nothing listens: exit 3 at the reachability check, before any load or run metadata."""
    out = tmp_path / "r"
    result = harness("run", str(SMOKE), "--url", f"http://127.0.0.1:{dead_port()}", "--out", str(out))
    assert result.returncode == 3, result.stderr
    assert "cannot connect to http://127.0.0.1" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "run.json").exists() and not list(out.glob("samples-*.csv"))  # stopped before the load


def test_external_url_open_model_accounts_for_every_request(tmp_path: Path) -> None:
    scenario = tmp_path / "open.yaml"
    scenario.write_text(
        "# Open model against an external endpoint\nname: open-ext\n"
        "target: {endpoint: /anything}\n"
        "load: {model: open, arrival: poisson, seed: 5, start: 200, stages: [{duration: 3s, target: 200}], warmup: 0s}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        result = harness("run", str(scenario), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out))
    assert_exit(result, 0, out)  # every request's accounting is the subject, not the generator's timeliness
    summary = json.loads((out / "summary.json").read_text())
    planned = summary["accounting"]["planned"]
    assert summary["accounting"]["completed"] == planned == summary["requests"]
    assert 450 < planned < 750  # Poisson around 600
    assert summary["target"]["bundled"] is False and summary["arrival"] == "poisson"
    assert "by_name" not in summary and "by name:" not in result.stdout  # nothing named, no per-name table
    assert_all_gone(out)


def long_smoke(out: Path, *extra: str) -> HarnessProcess:
    """The smoke scenario with a 60 s steady stage: long enough to be interrupted mid-load."""
    return HarnessProcess("run", str(SMOKE), "--out", str(out), "--set", "load.stages[1].duration=60s",
                          "--set", "load.warmup=0s", *extra)


def wait_for_load(proc: HarnessProcess, out: Path, rows: int = 50) -> None:
    """Until the run has flushed `rows` whole sample rows and recorded its processes."""
    wait_until(lambda: complete_rows(out / "samples-0.csv") >= rows and started_pids(out), 90,
               f"{rows} sample rows on disk", proc=proc)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_keeps_samples_writes_partial_summary_and_exits_130(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "run"
    with long_smoke(out) as proc:
        wait_for_load(proc, out)
        proc.send_signal(sig)
        assert proc.wait(60) == 130, proc.output_tail()
        stdout = proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["partial"] and summary["requests"] > 0
    assert summary["duration_s"] < 60  # stopped, not run to its planned end
    assert "PARTIAL" in stdout
    assert (out / "report.html").exists()
    assert_all_gone(out)


def test_ctrl_c_before_the_load_starts_cleans_up_and_exits_130(tmp_path: Path) -> None:
    """SIGINT while the bundled server is still starting: nothing was measured, no summary, the
    half-started server is stopped, exit 130."""
    out = tmp_path / "run"
    with long_smoke(out) as proc:
        def server_starting() -> list[psutil.Process]:
            if (out / "run.json").exists():
                raise AssertionError("the load began before the test could interrupt the start-up")
            return [p for p in proc.descendants() if "target_server" in " ".join(p.cmdline())]

        server = wait_until(server_starting, 60, "the bundled server process", proc=proc, poll=0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130, proc.output_tail()
        stderr = proc.stderr
    assert "interrupted before the load started" in stderr and "Traceback" not in stderr
    assert not (out / "run.json").exists() and not (out / "summary.json").exists()
    assert not list(out.glob("samples-*.csv"))
    gone, alive = psutil.wait_procs(server, timeout=15)
    assert not alive, f"the half-started server outlived the harness: {alive}"


def test_in_flight_requests_finish_on_ctrl_c(tmp_path: Path) -> None:
    """Requests in flight at Ctrl-C are answered (1 s after they arrived) and recorded as successes:
    the load stops, but what was sent is not cut off. The target runs in this process, so its
    receipt times and the signal's share one clock."""
    received: list[float] = []

    def slow(sock: socket.socket) -> None:
        while raw := read_request(sock):
            if raw.split(b" ", 2)[1] == b"/x":  # the load, not the /metrics scraper's probe
                received.append(time.monotonic())
            time.sleep(1.0)  # well inside the 5 s request timeout
            sock.sendall(OK_JSON)

    path = tmp_path / "slow.yaml"
    path.write_text("# slow external target\nname: slow\ntarget: {endpoint: /x, timeout: 5s}\n"
                    "load: {model: closed, start: 3, warmup: 0s, stages: [{duration: 60s, target: 3}]}\n")
    out = tmp_path / "run"
    with RawServer(slow) as server:
        with HarnessProcess("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
                            "--quiet") as proc:
            wait_for_load(proc, out, rows=3)
            signalled = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 130, proc.output_tail()
    in_flight = [r for r in received if signalled - 1.0 < r <= signalled]
    assert in_flight, "no request was in flight at the signal"
    df = pd.read_csv(out / "samples-0.csv")
    assert len(df) == len(received), (len(df), len(received))  # each request the target saw has its row
    assert (df["status"] == 200).all() and df["error"].isna().all(), df.tail(6)
    assert json.loads((out / "summary.json").read_text())["errors"] == 0
    assert_all_gone(out)


def test_harness_killed_leaves_intact_samples_a_report_and_no_server(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with long_smoke(out, "--quiet") as proc:
        wait_until(lambda: complete_rows(out / "samples-0.csv") >= 50 and
                   {"server", "server_worker", "generator"} <= roles_recorded(out), 90,
                   "rows and every process role recorded", proc=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert_all_gone(out, within=15)
    lines = (out / "samples-0.csv").read_text().splitlines(keepends=True)
    assert len(lines) > 1 and lines[-1].endswith("\n")  # intact up to the last complete row
    assert len({line.count(",") for line in lines}) == 1  # no torn line anywhere
    assert not (out / "summary.json").exists()

    report = harness("report", str(out))
    assert report.returncode == 0, report.stderr
    assert "rebuilt" in report.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"] and summary["interrupted"] and summary["requests"] > 0
    assert any("rebuilt from the samples" in n for n in summary["notes"])
    assert summary["environment"] == json.loads((out / "run.json").read_text())["environment"]
    assert "PARTIAL" in (out / "report.html").read_text().upper()


def roles_recorded(run_dir: Path) -> set[str]:
    try:
        lines = (run_dir / "resources.csv").read_text().splitlines()[1:]
    except FileNotFoundError:
        return set()
    return {line.split(",")[1] for line in lines if line.count(",") >= 2}
