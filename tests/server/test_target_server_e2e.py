"""End-to-end tests: the real gunicorn server as a subprocess on a free port, stopped with no leftovers."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch

from tests.support.server_fixtures import (
    ARTICLE_INPUT,
    REPO,
    URL_RE,
    RunningServer,
    server_env,
    start_server,
    survivors,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def metric_samples(url: str, name: str) -> dict[str, float]:
    """Every sample of one metric from /metrics, keyed by its label text."""
    text = requests.get(url + "/metrics", timeout=5).text
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return {labels or "": float(value) for labels, value in pattern.findall(text)}


def predict(session, url: str, rows) -> list:
    resp = session.post(url + "/predict", json={"inputs": rows}, timeout=10)
    assert resp.status_code == 200, resp.text
    assert "Server-Timing" in resp.headers
    return resp.json()["predictions"]


def test_linear_two_sync_workers_article_example_and_metrics():
    with start_server(["--model", "linear", "--workers", "2"]) as server:
        assert server.url.startswith("http://127.0.0.1:")
        workers = [p for p in server.procs if p.pid != server.popen.pid]
        assert len(workers) == 2, server.procs
        session = requests.Session()
        assert predict(session, server.url, ARTICLE_INPUT) == [[pytest.approx(0.6)]]
        v2 = session.post(server.url + "/v2/models/linear/infer", json={
            "id": "e2e", "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
        assert v2.status_code == 200 and v2.json()["id"] == "e2e"
        bad = session.post(server.url + "/predict", data=b"{nope", headers={"Content-Type": "application/json"})
        assert bad.status_code == 400 and "error" in bad.json()

        # the counter must sum over both workers: N more 200s on /predict, exactly
        key = '{endpoint="/predict",status="200"}'
        before = metric_samples(server.url, "inference_requests_total").get(key, 0.0)
        n = 60
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: predict(requests, server.url, ARTICLE_INPUT), range(n)))
        assert all(o == [[pytest.approx(0.6)]] for o in outs)
        after = metric_samples(server.url, "inference_requests_total")
        assert after[key] == before + n
        assert after['{endpoint="/predict",status="400"}'] == 1
        hist = metric_samples(server.url, "inference_request_duration_seconds_count")
        assert hist['{endpoint="/predict"}'] == before + n + 1


def test_mlp_gthread_batching_forms_batches_with_correct_outputs():
    argv = ["--model", "mlp", "--workers", "1", "--worker-class", "gthread", "--threads", "16",
            "--max-batch", "16", "--max-wait-ms", "5", "--torch-threads", "1"]
    with start_server(argv) as server:
        rng = np.random.default_rng(7)
        rows = rng.standard_normal((48, 256)).astype(np.float32).tolist()
        session = requests.Session()
        alone = [predict(session, server.url, [row])[0] for row in rows[:8]]
        before = metric_samples(server.url, "inference_batch_rows_bucket")

        def call(i):
            with requests.Session() as s:
                return i, predict(s, server.url, [rows[i]])[0]

        with ThreadPoolExecutor(16) as pool:
            results = dict(pool.map(call, range(len(rows))))
        for i, expected in enumerate(alone):
            assert results[i] == pytest.approx(expected, rel=1e-4, abs=1e-5)
        from target_server.models import build_model  # all rows agree with one local batch forward

        model = build_model("mlp")
        with torch.inference_mode():
            local = model(torch.tensor(rows)).numpy()
        assert np.allclose(np.array([results[i] for i in range(len(rows))]), local, rtol=1e-4, atol=1e-5)

        after = metric_samples(server.url, "inference_batch_rows_bucket")
        single = after['{le="1.0"}'] - before.get('{le="1.0"}', 0.0)
        total = after['{le="+Inf"}'] - before.get('{le="+Inf"}', 0.0)
        assert total == len(rows)
        assert single < total, "no request was served in a batch of more than one row"


@pytest.mark.parametrize("threads", [1, 4], ids=["fewer-threads-than-connections", "thread-per-connection"])
def test_gthread_keep_alive_connections_take_turns(threads):
    """worker.py: a thread keeps its connection only while every connection has a thread; either way
    interleaved keep-alive clients, a client that hangs up and pipelined requests are all served."""
    argv = ["--model", "linear", "--workers", "1", "--worker-class", "gthread", "--threads", str(threads)]
    with start_server(argv) as server:
        sessions = [requests.Session() for _ in range(3)]
        for _ in range(5):  # each request has its own 10 s timeout: a connection left waiting fails it
            for session in sessions:
                assert predict(session, server.url, ARTICLE_INPUT) == [[pytest.approx(0.6)]]
        sessions[0].close()  # hangs up while its thread may be waiting for its next request
        host, port = server.url.removeprefix("http://").split(":")
        body = b'{"inputs": [[1.0, 2.0, 3.0]]}'
        request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(request * 2)  # two pipelined requests in one write
            received = b""
            while received.count(b"HTTP/1.1 200") < 2 or not received.endswith(b"[[0.6]]}"):
                chunk = raw.recv(65536)
                assert chunk, received
                received += chunk
        for session in sessions[1:]:
            assert predict(session, server.url, ARTICLE_INPUT) == [[pytest.approx(0.6)]]


def test_mismatched_weights_exit_fast_with_message(tmp_path):
    path = tmp_path / "linear.pt"
    from target_server.models import SimpleModel

    torch.save(SimpleModel().state_dict(), path)
    # exits by itself (a server restarting its workers forever would hit the timeout and fail)
    proc = subprocess.run([sys.executable, "-m", "target_server", "--model", "mlp", "--weights", str(path),
                           "--port", "0"], cwd=REPO, env=server_env(), capture_output=True, text=True,
                          timeout=60, start_new_session=True)
    assert proc.returncode != 0
    assert "weights do not fit model 'mlp'" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "listening" not in proc.stdout


def test_bad_settings_exit_with_message():
    proc = subprocess.run([sys.executable, "-m", "target_server", "--threads", "4", "--max-batch", "8",
                           "--port", "0"], cwd=REPO, env=server_env(), capture_output=True, text=True,
                          timeout=60, start_new_session=True)
    assert proc.returncode == 2
    assert "gthread" in proc.stderr and "Traceback" not in proc.stderr


def test_port_in_use_is_refused_at_once_with_a_clear_message():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "target_server", "--model", "noop", "--port", str(port)],
                              cwd=REPO, env=server_env(), capture_output=True, text=True, timeout=60,
                              start_new_session=True)
    assert proc.returncode == 3
    assert f"127.0.0.1:{port} is already in use" in proc.stderr
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout


PARENT = textwrap.dedent("""
    import subprocess, sys
    child = subprocess.Popen([sys.executable, "-m", "target_server", "--port", "0", "--model", "noop",
                              "--workers", "2", "--exit-with-parent"])
    child.wait()
""")


def test_exit_with_parent_after_parent_is_killed():
    server = RunningServer([], launcher=[sys.executable, "-c", PARENT])
    try:
        server.wait_started()
        parent = server.procs[0]
        rest = server.procs[1:]
        assert len(rest) == 3, server.procs  # gunicorn master + 2 workers
        assert requests.get(server.url + "/v2/health/live", timeout=5).status_code == 200
        parent.send_signal(signal.SIGKILL)
        server.popen.wait(timeout=5)
        left = survivors(rest, timeout=10)
        assert not left, f"server outlived its parent: {left}\n{server.logs()}"
    finally:
        server.kill_everything()


def test_sigint_stops_cleanly():
    with start_server(["--model", "noop", "--workers", "2", "--worker-class", "gthread",
                       "--threads", "2"]) as server:
        assert requests.get(server.url + "/v2/health/ready", timeout=5).status_code == 200
        left = server.stop(signal.SIGINT)
        assert not left
        assert server.popen.returncode is not None
        assert URL_RE.search(server.out.text())
