"""Fault injection on real processes: the target dies or loses a worker in the middle of a run."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, SMOKE
from tests.support.cli import assert_all_gone
from tests.support.rawserver import OK_JSON, RawServer, respond_forever

pytestmark = pytest.mark.e2e


def start_harness(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_rows(samples: Path, rows: int = 50, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if samples.exists() and samples.read_text().count("\n") > rows:
            return
        time.sleep(0.1)
    raise AssertionError("the run never started sending")


def external_scenario(tmp_path: Path, on_down: str) -> Path:
    path = tmp_path / "ext.yaml"
    path.write_text("# external target\nname: ext\n"
                    f"target: {{endpoint: /x, timeout: 1s, on_down: {on_down}}}\n"
                    "load: {model: closed, start: 2, stages: [{duration: 6s, target: 2}]}\n")
    return path


def test_whole_target_dies_run_stops_with_reason_and_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "run"
    server = RawServer(respond_forever(OK_JSON)).__enter__()
    proc = start_harness(str(external_scenario(tmp_path, "stop")), "--url", f"http://127.0.0.1:{server.port}",
                         "--out", str(out), "--quiet")
    try:
        wait_for_rows(out / "samples-0.csv")
        server.__exit__(None, None, None)  # the whole target goes away
        died = time.monotonic()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, stderr
    assert time.monotonic() - died < 6  # noticed within ~2 s, then in-flight requests wrap up
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["valid"] and summary["partial"]
    assert any("stopped accepting connections" in r for r in summary["invalid_reasons"])
    assert summary["duration_s"] < 6
    acc = summary["accounting"]
    assert acc["planned"] == acc["completed"] + acc["failed"] + acc["timed_out"] + acc["not_sent"]


def test_target_down_with_continue_runs_to_the_end_and_counts_errors(tmp_path: Path) -> None:
    out = tmp_path / "run"
    server = RawServer(respond_forever(OK_JSON)).__enter__()
    proc = start_harness(str(external_scenario(tmp_path, "continue")), "--url",
                         f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
    try:
        wait_for_rows(out / "samples-0.csv")
        server.__exit__(None, None, None)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0, stderr  # no thresholds: errors alone do not fail the run
    assert summary["errors"] > 0 and set(summary["errors_by_kind"]) <= {"connect", "reset", "closed"}
    assert any("the load went on" in n for n in summary["notes"]) and summary["duration_s"] == 6


def test_one_gunicorn_worker_killed_mid_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_harness(str(SMOKE), "--out", str(out), "--quiet", "--set", "load.stages[1].duration=6s",
                         "--set", "target.server={model: linear, workers: 2, worker_class: sync}")
    try:
        wait_for_rows(out / "samples-0.csv", rows=200)
        workers = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", (out / "server.log").read_text())]
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode in (0, 1), stderr  # completes; a failed request may trip error_rate
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["partial"] and summary["valid"]
    acc = summary["accounting"]
    assert acc["planned"] == acc["completed"] + acc["failed"] + acc["timed_out"] + acc["not_sent"]
    log = (out / "server.log").read_text()
    booted = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", log)]
    assert len(booted) == 3, log  # the master replaced the dead worker
    seen = {int(line.split(",")[2]) for line in (out / "resources.csv").read_text().splitlines()[1:]
            if line.split(",")[1] == "server_worker"}
    assert booted[-1] in seen  # the respawned worker shows up in the resource series
    assert_all_gone(out)


def test_every_request_hangs_timeouts_fire_and_the_run_ends_on_time(tmp_path: Path) -> None:
    def hang(sock) -> None:  # type: ignore[no-untyped-def]
        from tests.support.rawserver import read_request

        read_request(sock)
        time.sleep(30)

    path = tmp_path / "hang.yaml"
    path.write_text("# hanging target\nname: hang\ntarget: {endpoint: /x, timeout: 1s}\n"
                    "load: {model: closed, start: 3, stages: [{duration: 4s, target: 3}]}\n")
    out = tmp_path / "run"
    with RawServer(hang) as server:
        started = time.monotonic()
        proc = start_harness(str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
        try:
            wait_for_rows(out / "samples-0.csv", rows=0)
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        elapsed = time.monotonic() - started
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors_by_kind"] == {"timeout": summary["requests"]} and summary["requests"] >= 9
    assert summary["accounting"]["timed_out"] == summary["accounting"]["planned"]
    assert elapsed < 4 + 1 + 8  # planned 4 s + one timeout + start-up and teardown


def test_two_runs_at_once_pick_their_own_ports_and_folders(tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    procs = [start_harness(str(SMOKE), "--out", str(out), "--quiet") for out in outs]
    try:
        results = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [r[1][-2000:] for r in results]
    urls = {json.loads((out / "summary.json").read_text())["target"]["url"] for out in outs}
    assert len(urls) == 2  # two bundled servers on two kernel-chosen ports
    for out in outs:
        assert_all_gone(out)


def test_report_renders_after_the_samples_are_compressed(tmp_path: Path) -> None:
    import gzip

    out = tmp_path / "run"
    proc = start_harness(str(SMOKE), "--out", str(out), "--quiet")
    proc.communicate(timeout=120)
    assert proc.returncode == 0
    for samples in out.glob("samples-*.csv"):
        samples.with_suffix(".csv.gz").write_bytes(gzip.compress(samples.read_bytes()))
        samples.unlink()
    (out / "report.html").unlink()
    result = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out / "report.html").stat().st_size > 10_000


HOSTILE_BODIES: dict[str, tuple[str, bytes]] = {
    "invalid JSON": ("application/json", b'{"inputs": [[1.0, 2.0'),
    "wrong content type": ("text/plain", b'{"inputs": [[1.0, 2.0, 3.0]]}'),
    "ragged rows": ("application/json", b'{"inputs": [[1.0, 2.0, 3.0], [1.0]]}'),
    "NaN": ("application/json", b'{"inputs": [[NaN, 2.0, 3.0]]}'),
    "strings": ("application/json", b'{"inputs": [["a", "b", "c"]]}'),
    "deep nesting": ("application/json", b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"),  # 40 kB
    "over the body limit": ("application/json", b'{"inputs": [' + b"[1.0, 2.0, 3.0]," * 20_000 + b"[1.0, 2.0, 3.0]]}"),
}


def hostile_exchange(port: int, raw: bytes, *, trickle: float = 0.0) -> int | None:
    """Send raw bytes (optionally a byte at a time), return the status answered, None if none."""
    import socket as socket_mod

    with socket_mod.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if trickle:
            for byte in raw:
                sock.sendall(bytes([byte]))
                time.sleep(trickle)
        else:
            sock.sendall(raw)
        data = b""
        try:
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, socket_mod.timeout):
            pass
    match = re.match(rb"HTTP/1\.[01] (\d{3})", data)
    return int(match.group(1)) if match else None


def hostile_requests(port: int) -> dict[str, bytes]:
    requests = {name: (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                       f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
                for name, (ctype, body) in HOSTILE_BODIES.items()}
    requests["unknown model"] = (b"POST /v2/models/nope/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
    requests["garbage request line"] = b"\x00\xff\xfe NOT HTTP AT ALL\r\n\r\n"
    return requests


def test_hostile_requests_during_a_load_run_leave_the_well_formed_ones_unaffected(tmp_path: Path) -> None:
    import threading

    from tests.support.server_fixtures import start_server

    scenario = tmp_path / "steady.yaml"
    scenario.write_text("# steady article requests\nname: steady\ntarget: {endpoint: /predict, timeout: 5s}\n"
                        "load: {model: closed, start: 4, stages: [{duration: 8s, target: 4}]}\n")
    out = tmp_path / "run"
    answers: dict[str, list[int | None]] = {}
    with start_server(["--model", "linear", "--workers", "2", "--worker-class", "gthread", "--threads", "8",
                       "--max-body-bytes", "65536"]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        stop = threading.Event()

        def attack() -> None:
            raws = hostile_requests(port)
            for _ in range(200):  # bounded: a few rounds fit in the run
                if stop.is_set():
                    return
                for name, raw in raws.items():
                    answers.setdefault(name, []).append(hostile_exchange(port, raw))

        def trickle() -> None:  # slowloris: a header byte every 20 ms, on two connections
            raw = hostile_requests(port)["invalid JSON"]
            while not stop.is_set():
                answers.setdefault("trickled", []).append(hostile_exchange(port, raw, trickle=0.02))

        attackers = [threading.Thread(target=attack)] + [threading.Thread(target=trickle) for _ in range(2)]
        proc = start_harness(str(scenario), "--url", server.url, "--out", str(out), "--quiet")
        try:
            wait_for_rows(out / "samples-0.csv", rows=10)
            for thread in attackers:
                thread.start()
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            stop.set()
            if proc.poll() is None:
                proc.kill()
            for thread in attackers:
                thread.join(timeout=30)
        health = hostile_exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        log = server.logs()
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 100 and summary["errors"] == 0, summary["errors_by_kind"]
    assert set(answers) == set(hostile_requests(port)) | {"trickled"}
    for name, statuses in answers.items():
        assert statuses and all(s is not None and 400 <= s < 500 for s in statuses), (name, statuses)
    assert answers["over the body limit"][0] == 413 and answers["unknown model"][0] == 404
    assert answers["deep nesting"][0] == 400  # parsed and refused, not merely too large
    assert health == 200
    assert len(re.findall(r"Booting worker", log)) == 2 and "WORKER TIMEOUT" not in log, log[-3000:]


def test_repeated_run_check_and_report(tmp_path: Path) -> None:
    """`run --repeat 2`: two complete run folders, repeats.json with the spread, and `check` and
    `report` take the folder of repeats as a whole."""
    scenario = tmp_path / "rep.yaml"
    scenario.write_text("# repeated\nname: rep\ntarget: {endpoint: /x, timeout: 1s}\n"
                        "load: {model: closed, start: 2, warmup: 0s, stages: [{duration: 6s, target: 2}]}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        proc = start_harness(str(scenario), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
                             "--quiet", "--repeat", "2")
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    doc = json.loads((out / "repeats.json").read_text())
    assert doc["planned"] == doc["completed"] == 2 and doc["exit_code"] == 0
    assert [r["folder"] for r in doc["repeats"]] == ["repeat-1", "repeat-2"]
    rps = [json.loads((out / f"repeat-{k}" / "summary.json").read_text())["rps"] for k in (1, 2)]
    assert (doc["spread"]["rps"]["min"], doc["spread"]["rps"]["max"]) == pytest.approx((min(rps), max(rps)))
    assert "repeat-2" in stdout and "cv" in stdout
    assert all((out / f"repeat-{k}" / "report.html").exists() for k in (1, 2))

    check = subprocess.run([sys.executable, "-m", "harness", "check", str(out), "--baseline", str(out)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "resampling repeats then windows (2 run, 2 baseline)" in check.stdout
    for k in (1, 2):
        (out / f"repeat-{k}" / "report.html").unlink()
    report = subprocess.run([sys.executable, "-m", "harness", "report", str(out)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0 and all((out / f"repeat-{k}" / "report.html").exists() for k in (1, 2))
