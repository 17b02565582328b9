"""Fault injection on real processes: the target dies, hangs, loses a worker or cannot start; the
harness's processes are checked gone after each."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import signal
import socket
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from harness.engines.threadpool import REFUSED_BACKOFF
from tests.support import SMOKE
from tests.support.cli import HarnessProcess, assert_all_gone, complete_rows, harness, wait_until
from tests.support.rawserver import OK_JSON, RawServer, read_request, respond_forever

pytestmark = pytest.mark.e2e


def start_harness(*args: str) -> HarnessProcess:
    return HarnessProcess("run", *args)


def wait_for_rows(proc: HarnessProcess, samples: Path, rows: int = 50, timeout: float = 60) -> None:
    wait_until(lambda: complete_rows(samples) >= rows, timeout, f"{rows} sample rows", proc=proc)


def external_scenario(tmp_path: Path, on_down: str, seconds: int = 6) -> Path:
    path = tmp_path / "ext.yaml"
    path.write_text("# external target\nname: ext\n"
                    f"target: {{endpoint: /x, timeout: 1s, on_down: {on_down}}}\n"
                    f"load: {{model: closed, start: 2, stages: [{{duration: {seconds}s, target: 2}}]}}\n")
    return path


def accounting_holds(summary: dict) -> bool:
    acc = summary["accounting"]
    return acc["planned"] == acc["completed"] + acc["failed"] + acc["timed_out"] + acc["not_sent"]


def test_whole_target_dies_run_stops_with_reason_and_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON)) as server:
        with start_harness(str(external_scenario(tmp_path, "stop", seconds=30)), "--url",
                           f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet") as proc:
            wait_for_rows(proc, out / "samples-0.csv")
            server.stop()  # the whole target goes away
            assert proc.wait(60) == 3, proc.output_tail()
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["valid"] and summary["partial"]
    assert any("stopped accepting connections" in r for r in summary["invalid_reasons"])
    assert summary["duration_s"] < 30  # stopped, not run to its planned end
    assert accounting_holds(summary)
    assert_all_gone(out)


def test_target_down_with_continue_runs_to_the_end_and_counts_errors(tmp_path: Path) -> None:
    """The load goes on against a dead target; each closed-model user backs off REFUSED_BACKOFF after
    a refused connect, so the refused attempts are bounded by the users and the time, not a busy loop."""
    out = tmp_path / "run"
    users = 2
    with RawServer(respond_forever(OK_JSON, delay_s=0.005)) as server:
        with start_harness(str(external_scenario(tmp_path, "continue")), "--url",
                           f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet") as proc:
            wait_for_rows(proc, out / "samples-0.csv")
            server.stop()
            assert proc.wait(60) == 0, proc.output_tail()  # no thresholds: errors alone do not fail the run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] > 0 and set(summary["errors_by_kind"]) <= {"connect", "reset", "closed"}
    assert any("the load went on" in n for n in summary["notes"]) and summary["duration_s"] == 6
    df = pd.read_csv(out / "samples-0.csv")
    refused = df[df["error"] == "connect"]
    assert len(refused) > 0
    span = float(refused["end"].max() - refused["start"].min())
    assert len(refused) <= users * (span / REFUSED_BACKOFF + 1), (len(refused), span)  # the back-off held
    assert_all_gone(out)


def test_one_gunicorn_worker_killed_mid_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_harness(str(SMOKE), "--out", str(out), "--quiet", "--set", "load.stages[1].duration=6s",
                       "--set", "target.server={model: linear, workers: 2, worker_class: sync}") as proc:
        wait_for_rows(proc, out / "samples-0.csv", rows=200)
        workers = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", (out / "server.log").read_text())]
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(60) in (0, 1), proc.output_tail()  # completes; a failed request may trip error_rate
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["partial"] and summary["valid"]
    assert accounting_holds(summary)
    log = (out / "server.log").read_text()
    booted = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", log)]
    assert len(booted) == 3, log  # the master replaced the dead worker
    seen = {int(line.split(",")[2]) for line in (out / "resources.csv").read_text().splitlines()[1:]
            if line.split(",")[1] == "server_worker"}
    assert booted[-1] in seen  # the respawned worker shows up in the resource series
    assert_all_gone(out)


def test_the_bundled_server_dying_mid_run_stops_the_run_with_exit_3(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with start_harness(str(SMOKE), "--out", str(out), "--quiet", "--set", "load.stages[1].duration=30s") as proc:
        wait_for_rows(proc, out / "samples-0.csv")
        master = int(re.search(r"Listening at: \S+ \((\d+)\)", (out / "server.log").read_text()).group(1))
        os.kill(master, signal.SIGKILL)  # the whole server: its workers follow their master
        assert proc.wait(60) == 3, proc.output_tail()
    summary = json.loads((out / "summary.json").read_text())
    assert not summary["valid"] and summary["partial"]
    assert any("the bundled server exited" in r for r in summary["invalid_reasons"]), summary["invalid_reasons"]
    assert summary["duration_s"] < 30 and accounting_holds(summary)
    assert_all_gone(out)


def test_the_bundled_server_cannot_start_exit_3_with_the_tail_of_its_log(tmp_path: Path) -> None:
    import torch

    from target_server.models import SimpleModel

    torch.save(SimpleModel().state_dict(), tmp_path / "linear.pt")  # weights of another model
    path = tmp_path / "bad-server.yaml"
    path.write_text("# a server that cannot start\nname: bad-server\n"
                    "target: {server: {model: mlp, weights: linear.pt}}\n"
                    "load: {stages: [{duration: 2s, target: 1}]}\n")
    out = tmp_path / "run"
    result = harness("run", str(path), "--out", str(out))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "the bundled server exited" in result.stderr and str(out / "server.log") in result.stderr
    assert "weights do not fit model 'mlp'" in result.stderr  # the tail of server.log, in the message
    assert "weights do not fit model 'mlp'" in (out / "server.log").read_text()
    assert "Traceback" not in result.stderr and not (out / "summary.json").exists()


def test_every_request_hangs_timeouts_fire_and_the_run_ends_on_time(tmp_path: Path) -> None:
    """The target holds every request until the test lets go (after the harness exited): each
    request ends at the 1 s timeout, and the run ends without waiting for the target."""
    release = threading.Event()

    def hang(sock: socket.socket) -> None:
        read_request(sock)
        release.wait(120)

    users, seconds, timeout = 3, 4, 1.0
    path = tmp_path / "hang.yaml"
    path.write_text(f"# hanging target\nname: hang\ntarget: {{endpoint: /x, timeout: {timeout}s}}\n"
                    f"load: {{model: closed, start: {users}, stages: [{{duration: {seconds}s, target: {users}}}]}}\n")
    out = tmp_path / "run"
    with RawServer(hang) as server:
        try:
            with start_harness(str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
                               "--quiet") as proc:
                proc.wait(60)
                assert not release.is_set()  # it ended while the target still held its requests
        finally:
            release.set()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors_by_kind"] == {"timeout": summary["requests"]}
    assert summary["accounting"]["timed_out"] == summary["accounting"]["planned"]
    df = pd.read_csv(out / "samples-0.csv")
    assert users <= len(df) <= users * (seconds / timeout + 1)  # one request per user per timeout at most
    assert ((df["end"] - df["start"]) >= timeout * 0.99).all()  # none ended before its timeout
    assert_all_gone(out)


def test_two_runs_at_once_pick_their_own_ports_and_folders(tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    with contextlib.ExitStack() as stack:
        procs = [stack.enter_context(start_harness(str(SMOKE), "--out", str(out), "--quiet")) for out in outs]
        codes = [p.wait(120) for p in procs]
        assert codes == [0, 0], [p.output_tail() for p in procs]
    urls = {json.loads((out / "summary.json").read_text())["target"]["url"] for out in outs}
    assert len(urls) == 2  # two bundled servers on two kernel-chosen ports
    for out in outs:
        assert_all_gone(out)


def test_report_renders_after_the_samples_are_compressed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert harness("run", str(SMOKE), "--out", str(out), "--quiet").returncode == 0
    for samples in out.glob("samples-*.csv"):
        samples.with_suffix(".csv.gz").write_bytes(gzip.compress(samples.read_bytes()))
        samples.unlink()
    (out / "report.html").unlink()
    result = harness("report", str(out))
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
        except (TimeoutError, ConnectionResetError):
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
        try:
            with start_harness(str(scenario), "--url", server.url, "--out", str(out), "--quiet") as proc:
                wait_for_rows(proc, out / "samples-0.csv", rows=10)
                for thread in attackers:
                    thread.start()
                code = proc.wait(60)
                stderr = proc.stderr
        finally:
            stop.set()
            for thread in attackers:
                if thread.ident is not None:  # started
                    thread.join(timeout=30)
        health = hostile_exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        log = server.logs()
    assert code == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 100 and summary["errors"] == 0, summary["errors_by_kind"]
    assert set(answers) == set(hostile_requests(port)) | {"trickled"}
    for name, statuses in answers.items():
        assert statuses and all(s is not None and 400 <= s < 500 for s in statuses), (name, statuses)
    assert answers["over the body limit"][0] == 413 and answers["unknown model"][0] == 404
    assert answers["deep nesting"][0] == 400  # parsed and refused, not merely too large
    assert health == 200
    assert len(re.findall(r"Booting worker", log)) == 2 and "WORKER TIMEOUT" not in log, log[-3000:]


def slowed_copy(folder: Path, dest: Path, factor: float) -> Path:
    """A copy of a folder of repeats whose every answered request took `factor` times as long."""
    shutil.copytree(folder, dest)
    for samples in dest.glob("repeat-*/samples-*.csv"):
        df = pd.read_csv(samples)
        df["end"] = df["start"] + factor * (df["end"] - df["start"])
        df.to_csv(samples, index=False)
    return dest


def test_repeated_run_check_and_report(tmp_path: Path) -> None:
    """`run --repeat 2`: two complete run folders, repeats.json with the spread, and `check` and
    `report` take the folder of repeats as a whole (judged against a copy made 3x slower)."""
    scenario = tmp_path / "rep.yaml"
    scenario.write_text("# repeated\nname: rep\ntarget: {endpoint: /x, timeout: 1s}\n"
                        "load: {model: closed, start: 2, warmup: 0s, stages: [{duration: 6s, target: 2}]}\n")
    out = tmp_path / "run"
    with RawServer(respond_forever(OK_JSON, delay_s=0.005)) as server:
        result = harness("run", str(scenario), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
                         "--quiet", "--repeat", "2")
    assert result.returncode == 0, result.stderr
    stdout = result.stdout
    doc = json.loads((out / "repeats.json").read_text())
    assert doc["planned"] == doc["completed"] == 2 and doc["exit_code"] == 0
    assert [r["folder"] for r in doc["repeats"]] == ["repeat-1", "repeat-2"]
    rps = [json.loads((out / f"repeat-{k}" / "summary.json").read_text())["rps"] for k in (1, 2)]
    assert (doc["spread"]["rps"]["min"], doc["spread"]["rps"]["max"]) == pytest.approx((min(rps), max(rps)))
    assert "repeat-2" in stdout and "cv" in stdout
    assert all((out / f"repeat-{k}" / "report.html").exists() for k in (1, 2))
    for k in (1, 2):
        assert_all_gone(out / f"repeat-{k}")

    slow = slowed_copy(out, tmp_path / "slow", 3.0)
    check = harness("check", str(slow), "--baseline", str(out))
    assert check.returncode == 1, check.stdout + check.stderr
    assert "REGRESSION" in check.stdout and "p95" in check.stdout
    assert "resampling repeats then windows (2 run, 2 baseline)" in check.stdout
    back = harness("check", str(out), "--baseline", str(slow))
    assert back.returncode == 0 and "improved" in back.stdout, back.stdout + back.stderr
    for k in (1, 2):
        (out / f"repeat-{k}" / "report.html").unlink()
    report = harness("report", str(out))
    assert report.returncode == 0 and all((out / f"repeat-{k}" / "report.html").exists() for k in (1, 2))
