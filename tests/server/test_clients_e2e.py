"""Real clients against the real server (gunicorn, both web layers): Triton's tritonclient over
JSON and binary tensors, KServe v1 over plain HTTP, the FastAPI twin's workers, batching and TLS."""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from target_server.tls import self_signed
from tests.support.cli import assert_all_gone, harness
from tests.support.server_fixtures import ARTICLE_INPUT, REPO, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _client(url: str) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(url.split("://", 1)[1])


def _infer(client, rows, *, binary: bool):
    x = triton.InferInput("input-0", list(np.shape(rows)), "FP32")
    x.set_data_from_numpy(np.asarray(rows, dtype=np.float32), binary_data=binary)
    out = triton.InferRequestedOutput("output-0", binary_data=binary)
    return client.infer("linear", [x], outputs=[out], request_id="t-1")


@pytest.mark.parametrize("framework", ["flask", "fastapi"])
def test_tritonclient_and_kserve_v1_against_both_web_layers(framework):
    with start_server(["--framework", framework, "--workers", "2", "--worker-class", "gthread",
                       "--threads", "2"]) as server:
        client = _client(server.url)
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("linear")
        assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
        meta = client.get_model_metadata("linear")
        assert meta["inputs"][0] == {"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}
        config = client.get_model_config("linear")
        assert config["input"][0]["data_type"] == "TYPE_FP32" and config["input"][0]["dims"] == [3]
        before = client.get_inference_statistics("linear")["model_stats"][0]

        rows = [[1, 2, 3], [4, 5, 6]]
        for binary in (False, True):  # JSON both ways, then binary both ways; batched rows
            result = _infer(client, rows, binary=binary)
            assert result.as_numpy("output-0").ravel().tolist() == pytest.approx([0.6, 1.5])
            assert result.get_response()["id"] == "t-1"
        x = triton.InferInput("input-0", [1, 3], "FP32")
        x.set_data_from_numpy(np.asarray(ARTICLE_INPUT, dtype=np.float32))
        assert client.infer("linear", [x]).as_numpy("output-0").tolist() == [[pytest.approx(0.6)]]  # defaults
        with pytest.raises(InferenceServerException, match="expects"):
            bad = triton.InferInput("input-0", [1, 4], "FP32")
            bad.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
            client.infer("linear", [bad])

        after = client.get_inference_statistics("linear")["model_stats"][0]  # summed over both workers
        success = after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"]
        assert success == 3 and after["inference_count"] - before["inference_count"] == 5
        assert after["inference_stats"]["fail"]["count"] - before["inference_stats"]["fail"]["count"] == 1
        client.close()

        v1 = requests.post(server.url + "/v1/models/linear:predict", json={"instances": rows}, timeout=10)
        assert v1.status_code == 200 and "Server-Timing" in v1.headers
        assert v1.json() == {"predictions": [[pytest.approx(0.6)], [pytest.approx(1.5)]]}
        assert requests.get(server.url + "/v1/models/linear", timeout=5).json() == {"name": "linear", "ready": True}
        bad = requests.post(server.url + "/v1/models/linear:predict", json={"instances": [[1, "x", 3]]}, timeout=5)
        assert bad.status_code == 400 and "non-numeric" in bad.json()["error"]


def _metric(url: str, name: str) -> dict[str, float]:
    text = requests.get(url + "/metrics", timeout=5).text
    return {labels: float(v) for labels, v in re.findall(rf"^{re.escape(name)}(\{{[^}}]*\}}|) (\S+)$", text, re.M)}


def test_fastapi_workers_batch_concurrent_requests_and_stop_cleanly():
    argv = ["--framework", "fastapi", "--model", "mlp", "--workers", "2", "--threads", "1",
            "--max-batch", "16", "--max-wait-ms", "5", "--torch-threads", "1"]
    with start_server(argv) as server:  # asserts that no worker outlives SIGTERM
        assert "framework=fastapi" in server.out.text()
        workers = [p for p in server.procs if p.pid != server.popen.pid]
        assert len(workers) == 2
        rng = np.random.default_rng(3)
        rows = rng.standard_normal((48, 256)).astype(np.float32).tolist()
        alone = [requests.post(server.url + "/predict", json={"inputs": [r]}, timeout=10).json()["predictions"][0]
                 for r in rows[:4]]

        def one(row):
            return requests.post(server.url + "/predict", json={"inputs": [row]}, timeout=30).json()["predictions"][0]

        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(one, rows))
        for a, b in zip(alone, together[:4]):
            assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
        counts = _metric(server.url, "inference_batch_rows_bucket")
        assert counts['{le="1.0"}'] < counts['{le="+Inf"}']  # some forward served more than one row


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_fastapi_over_https_echoes_request_ids_and_logs_them(tmp_path):
    cert, key = self_signed(tmp_path)
    argv = ["--framework", "fastapi", "--tls", "--certfile", str(cert), "--keyfile", str(key), "--access-log"]
    with start_server(argv, verify=str(cert)) as server:
        assert server.url.startswith("https://")
        session = requests.Session()
        for i in range(2):
            resp = session.post(server.url + "/predict", json={"inputs": ARTICLE_INPUT},
                                headers={"X-Request-ID": f"fa-{i}"}, verify=str(cert), timeout=10)
            assert resp.json() == {"predictions": [[pytest.approx(0.6)]]} and resp.headers["X-Request-ID"] == f"fa-{i}"
        server.stop()
        log = server.err.text() + server.out.text()
    assert 'rid="fa-0"' in log and 'rid="fa-1"' in log and '"POST /predict" 200' in log


def test_a_scenario_selects_the_fastapi_twin_over_https(tmp_path):
    """`target.server: {framework: fastapi, tls: true}` through the harness: the twin serves the run."""
    out = tmp_path / "run"
    proc = harness("run", str(REPO / "scenarios/smoke.yaml"), "--out", str(out), "--duration", "2s", "--quiet",
                   "--set", "target.server.framework=fastapi", "--set", "target.server.tls=true")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["target"]["url"].startswith("https://127.0.0.1:")
    assert "framework=fastapi" in summary["target"]["server"] and summary["target"]["server"].endswith("tls")
    assert summary["ok"] > 0 and summary["errors"] == 0
    assert_all_gone(out)
