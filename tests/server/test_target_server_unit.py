"""Unit tests of the bundled target server: Flask test client, payload checks, weights, batcher, config."""
from __future__ import annotations

import json
import math
import os
import pickle
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import orjson
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_server import readiness
from target_server import weights as weights_cmd
from target_server.batching import DynamicBatcher, Overloaded
from target_server.cli import config_from_args
from target_server.config import FRAMEWORKS, ServerConfig, env_defaults
from target_server.models import (
    MLP_SIZES,
    REGISTRY,
    SimpleModel,
    WeightsError,
    build_model,
    check_weights,
    read_state_dict,
)
from tests.support.server_fixtures import ARTICLE_INPUT, make_app, make_client

JSON = "application/json"


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    """Unit tests run the app outside the launcher: in-process metrics, no readiness markers."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv(readiness.STATE_DIR_ENV, raising=False)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def framework(request):
    """Every test of the web layer runs against both: Flask and the FastAPI twin."""
    return request.param


@pytest.fixture(scope="module")
def linear(framework):
    return make_client(framework, model="linear")


@pytest.fixture(scope="module")
def small_limits(framework):
    return make_client(framework, model="linear", max_rows=4, max_body_bytes=16_000)


def post(client, path, payload, **kwargs):
    data = payload if isinstance(payload, (bytes, str)) else orjson.dumps(payload)
    kwargs.setdefault("content_type", JSON)
    return client.post(path, data=data, **kwargs)


def v2_body(data, shape, **extra):
    return {"inputs": [{"name": "input-0", "shape": shape, "datatype": "FP32", "data": data}], **extra}


def assert_error(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == JSON
    body = resp.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    return body["error"]


# --- inference endpoints -------------------------------------------------------------------------

def test_article_example(linear):
    resp = post(linear, "/predict", {"inputs": ARTICLE_INPUT})
    assert resp.status_code == 200
    assert resp.mimetype == JSON
    assert resp.get_json()["predictions"] == [[pytest.approx(0.6, rel=1e-6)]]


def test_multiple_rows(linear):
    rows = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [10, -10, 5], [0.5, 0.25, 0.25]]
    preds = post(linear, "/predict", {"inputs": rows}).get_json()["predictions"]
    assert preds == [[pytest.approx(0.1 * sum(r), abs=1e-6)] for r in rows]


@pytest.mark.parametrize("data", [[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]],
                         ids=["flat", "nested"])
def test_v2_infer(linear, data):
    resp = post(linear, "/v2/models/linear/infer", v2_body(data, [2, 3], id="req-42"))
    assert resp.status_code == 200
    body = resp.get_json()
    assert body["model_name"] == "linear"
    assert body["id"] == "req-42"
    (out,) = body["outputs"]
    assert out["shape"] == [2, 1] and out["datatype"] == "FP32"
    assert out["data"] == [pytest.approx(0.6), pytest.approx(1.5)]


def test_v2_versioned_path(linear):
    resp = post(linear, "/v2/models/linear/versions/1/infer", v2_body([1, 2, 3], [1, 3]))
    assert resp.status_code == 200
    assert "id" not in resp.get_json()


def test_v2_metadata(linear):
    resp = linear.get("/v2/models/linear")
    assert resp.status_code == 200
    meta = resp.get_json()
    assert meta["name"] == "linear"
    assert meta["inputs"][0]["shape"] == [-1, 3] and meta["inputs"][0]["datatype"] == "FP32"
    assert meta["outputs"][0]["shape"] == [-1, 1]
    assert "workers=" in meta["parameters"]["settings"]
    assert meta["parameters"]["device"] == "cpu"  # device auto on a machine without CUDA
    assert_error(linear.get("/v2/models/mlp"), 404)


def test_the_device_knob_without_cuda() -> None:
    import subprocess
    import sys

    from target_server.device import DeviceUnavailable, resolve_device

    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == "cpu"
    with pytest.raises(DeviceUnavailable, match="device cuda: CUDA is not available here"):
        resolve_device("cuda")
    # asked for by hand, the server refuses before it starts anything (exit 2), and says why
    result = subprocess.run([sys.executable, "-m", "target_server", "--device", "cuda", "--port", "0"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "device cuda: CUDA is not available here" in result.stderr
    assert "tinylm runs on the CPU" in " ".join(ServerConfig(model="tinylm", device="cuda", max_batch=4,
                                                             worker_class="gthread", threads=8).problems())


def test_mlp_rows_and_batching_agree(framework):
    """The MLP answers per row the same whether rows come alone or together."""
    client = make_client(framework, model="mlp", torch_threads=1)
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((3, MLP_SIZES[0])).astype(np.float32).tolist()
    together = post(client, "/predict", {"inputs": rows}).get_json()["predictions"]
    assert np.asarray(together).shape == (3, MLP_SIZES[-1])
    for row, expected in zip(rows, together):
        alone = post(client, "/predict", {"inputs": [row]}).get_json()["predictions"][0]
        assert alone == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_noop_and_sleep_models(framework):
    noop = make_client(framework, model="noop")
    assert post(noop, "/predict", {"inputs": [[1, 2, 3]] * 2}).get_json() == {"predictions": [[0.0], [0.0]]}
    sleep = make_client(framework, model="sleep", sleep_ms=30)
    t0 = time.perf_counter()
    resp = post(sleep, "/predict", {"inputs": ARTICLE_INPUT})
    assert resp.status_code == 200 and time.perf_counter() - t0 >= 0.03
    assert "infer;dur=" in resp.headers["Server-Timing"]


def test_health(linear):
    live = linear.get("/v2/health/live")
    ready = linear.get("/v2/health/ready")
    assert live.status_code == 200 and ready.status_code == 200
    assert linear.get("/v2/models/linear/ready").status_code == 200


def test_ready_waits_for_every_worker(monkeypatch, tmp_path, framework):
    """Under the launcher, /v2/health/ready is 503 until every worker has warmed up."""
    monkeypatch.setenv(readiness.STATE_DIR_ENV, str(tmp_path))
    client = make_client(framework, model="noop", workers=2)
    assert client.get("/v2/health/ready").status_code == 503  # only this process is marked
    assert client.get("/v2/health/live").status_code == 200
    readiness.mark_ready(os.getppid())  # a second live process
    assert client.get("/v2/health/ready").status_code == 200


def _counter(client, endpoint, status):
    text = client.get("/metrics").get_data(as_text=True)
    needle = f'inference_requests_total{{endpoint="{endpoint}",status="{status}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle):])
    return 0.0


def test_metrics_counts_requests(linear):
    before_ok = _counter(linear, "/predict", 200)
    before_bad = _counter(linear, "/predict", 400)
    post(linear, "/predict", {"inputs": ARTICLE_INPUT})
    post(linear, "/predict", {"inputs": ARTICLE_INPUT})
    post(linear, "/predict", {"nope": 1})
    assert _counter(linear, "/predict", 200) == before_ok + 2
    assert _counter(linear, "/predict", 400) == before_bad + 1
    resp = linear.get("/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    text = resp.get_data(as_text=True)
    for name in ("inference_request_duration_seconds_bucket", "inference_queue_duration_seconds_count",
                 "inference_compute_duration_seconds_sum", "inference_batch_rows_bucket"):
        assert name in text


def _timing(resp):
    header = resp.headers.get("Server-Timing")
    assert header, f"no Server-Timing on {resp.status_code}"
    parts = dict(p.strip().split(";dur=") for p in header.split(","))
    assert set(parts) == {"queue", "infer", "total"}
    return {k: float(v) for k, v in parts.items()}


def test_server_timing_on_every_inference_response(linear, small_limits):
    responses = [
        post(linear, "/predict", {"inputs": ARTICLE_INPUT}),
        post(linear, "/v2/models/linear/infer", v2_body([1, 2, 3], [1, 3])),
        post(linear, "/predict", b"{not json"),
        post(linear, "/predict", {"inputs": ARTICLE_INPUT}, content_type="text/plain"),
        post(linear, "/v2/models/nope/infer", v2_body([1, 2, 3], [1, 3])),
        post(small_limits, "/predict", b" " * 20_000),
        post(small_limits, "/predict", {"inputs": [[1, 2, 3]] * 5}),
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 415, 404, 413, 413]
    for resp in responses:
        timing = _timing(resp)
        assert timing["total"] >= timing["infer"] >= 0 and timing["queue"] >= 0


def test_overloaded_batch_queue_answers_503_with_retry_after(framework):
    client = make_client(framework, model="noop", worker_class="gthread", threads=4, max_batch=4, max_wait_ms=0,
                         queue_limit=1)
    batcher = client.strategy.batcher if framework == "fastapi" else client.application.extensions[
        "target_server"]["strategy"].batcher
    entered, release = threading.Event(), threading.Event()
    forward = batcher._forward

    def gated(matrix):
        entered.set()
        release.wait(10)
        return forward(matrix)

    batcher._forward = gated
    results = {}

    def call(key):
        results[key] = post(client, "/predict", {"inputs": ARTICLE_INPUT})

    threads = [threading.Thread(target=call, args=(key,)) for key in ("first", "second")]
    try:
        threads[0].start()
        assert entered.wait(10)  # the first request is in its forward
        threads[1].start()
        deadline = time.monotonic() + 10
        while batcher.depth < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert batcher.depth == 1  # the second waits in the queue (limit 1)
        third = post(client, "/predict", {"inputs": ARTICLE_INPUT})
    finally:
        release.set()
        for thread in threads:
            thread.join(10)
    assert "full" in assert_error(third, 503)
    assert third.headers["Retry-After"].isdigit()
    _timing(third)
    assert results["first"].status_code == 200 and results["second"].status_code == 200


# --- auth ----------------------------------------------------------------------------------------

def test_bearer_token(framework):
    client = make_client(framework, model="linear", auth_token="s3cret")
    body = {"inputs": ARTICLE_INPUT}
    assert_error(post(client, "/predict", body), 401)
    resp = post(client, "/predict", body, headers={"Authorization": "Bearer wrong"})
    assert_error(resp, 401)
    assert "Bearer" in resp.headers["WWW-Authenticate"]
    assert_error(post(client, "/predict", body, headers={"Authorization": "s3cret"}), 401)
    assert_error(client.get("/metrics"), 401)
    ok = post(client, "/predict", body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.get_json()["predictions"] == [[pytest.approx(0.6)]]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200


# --- bad input: always a 4xx JSON error ----------------------------------------------------------

DEEP = b"[" * 5000 + b"]" * 5000

BAD_PREDICT = {
    "invalid JSON": (b'{"inputs": [[1, 2, 3]', 400, "invalid JSON"),
    "empty body": (b"", 400, "empty"),
    "missing inputs": ({"instances": [[1, 2, 3]]}, 400, "inputs"),
    "body not an object": ([[1, 2, 3]], 400, "object"),
    "inputs not a list": ({"inputs": "1,2,3"}, 400, "list"),
    "inputs a number": ({"inputs": 5}, 400, "list"),
    "rows not lists": ({"inputs": [1, 2, 3]}, 400, "rows"),
    "ragged rows": ({"inputs": [[1, 2, 3], [1, 2]]}, 400, "ragged"),
    "nested row": ({"inputs": [[1, [2], 3]]}, 400, "ragged"),
    "wrong row width": ({"inputs": [[1, 2]]}, 400, "expects 3"),
    "3-D input": ({"inputs": [[[1, 2, 3]]]}, 400, "2-D"),
    "strings": ({"inputs": [["a", "b", "c"]]}, 400, "non-numeric"),
    "null": ({"inputs": [[None, 2, 3]]}, 400, "non-numeric"),
    "booleans": ({"inputs": [[True, False, True]]}, 400, "non-numeric"),
    "booleans among numbers": ({"inputs": [[1.0, True, 3.0]]}, 400, "non-numeric"),
    "object value": ({"inputs": [[{"x": 1}, 2, 3]]}, 400, "non-numeric"),
    "NaN literal": (b'{"inputs": [[NaN, 2, 3]]}', 400, "invalid JSON"),
    "Infinity literal": (b'{"inputs": [[Infinity, 2, 3]]}', 400, "invalid JSON"),
    "number beyond float64": (b'{"inputs": [[1e400, 2, 3]]}', 400, "invalid JSON"),
    "float32 overflow": ({"inputs": [[1e39, 2, 3]]}, 400, "finite"),
    "empty batch": ({"inputs": []}, 400, "empty"),
    "empty rows": ({"inputs": [[], []]}, 400, "expects 3"),
    "too many rows": ({"inputs": [[1, 2, 3]] * 5}, 413, "limit is 4"),
    "deeply nested JSON": (DEEP, 400, "invalid JSON"),
    "deep but parseable": (b'{"inputs": [' + b"[" * 200 + b"1" + b"]" * 200 + b"]}", 400, ""),
    "body over limit": (orjson.dumps({"inputs": [[1.5, 2.5, 3.5]] * 2000}), 413, "limit"),
}


@pytest.mark.parametrize("payload,status,fragment", BAD_PREDICT.values(), ids=BAD_PREDICT.keys())
def test_bad_predict_input(small_limits, payload, status, fragment):
    message = assert_error(post(small_limits, "/predict", payload), status)
    assert fragment.lower() in message.lower()


def _v2(**tensor):
    base = {"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}
    base.update(tensor)
    return {"inputs": [{k: v for k, v in base.items() if v is not ...}]}


BAD_V2 = {
    "invalid JSON": (b'{"inputs": [', 400, "invalid JSON"),
    "missing inputs": ({"id": "x"}, 400, "inputs"),
    "inputs not a list": ({"inputs": {"data": [1, 2, 3]}}, 400, "inputs"),
    "two tensors": ({"inputs": _v2()["inputs"] * 2}, 400, "exactly one"),
    "tensor not an object": ({"inputs": [[1, 2, 3]]}, 400, "object"),
    "missing data": (_v2(data=...), 400, "data"),
    "booleans among numbers": (_v2(data=[1, True, 3]), 400, "non-numeric"),
    "missing shape": (_v2(shape=...), 400, "shape"),
    "shape not 2-D": (_v2(shape=[3]), 400, "shape"),
    "shape of strings": (_v2(shape=["1", "3"]), 400, "shape"),
    "negative shape": (_v2(shape=[-1, 3]), 400, "shape"),
    "wrong width": (_v2(shape=[1, 4], data=[1, 2, 3, 4]), 400, "expects"),
    "unknown datatype": (_v2(datatype="BYTES"), 400, "datatype"),
    "datatype not a string": (_v2(datatype=["FP32"]), 400, "datatype"),
    "flat data wrong length": (_v2(data=[1, 2]), 400, "needs 3"),
    "nested rows disagree with shape": (_v2(shape=[2, 3], data=[[1, 2, 3]]), 400, "shape says 2"),
    "ragged nested": (_v2(shape=[2, 3], data=[[1, 2, 3], [1, 2]]), 400, "ragged"),
    "non-numeric": (_v2(data=["a", "b", "c"]), 400, "non-numeric"),
    "data not a list": (_v2(data="1,2,3"), 400, "list"),
    "empty batch": (_v2(shape=[0, 3], data=[]), 400, "empty"),
    "float32 overflow": (_v2(data=[1e39, 1, 1]), 400, "finite"),
    "NaN literal": (b'{"inputs": [{"name": "a", "shape": [1, 3], "datatype": "FP32", "data": [NaN, 1, 2]}]}',
                    400, "invalid JSON"),
    "too many rows": (_v2(shape=[5, 3], data=[1, 2, 3] * 5), 413, "limit is 4"),
    "deeply nested JSON": (DEEP, 400, "invalid JSON"),
    "body over limit": (_v2(shape=[4, 3], data=[123456.789] * 2000), 413, "limit"),
}


@pytest.mark.parametrize("payload,status,fragment", BAD_V2.values(), ids=BAD_V2.keys())
def test_bad_v2_input(small_limits, payload, status, fragment):
    message = assert_error(post(small_limits, "/v2/models/linear/infer", payload), status)
    assert fragment.lower() in message.lower()


WRONG_TYPES = [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]


# v2 accepts a body without Content-Type, as Triton does (test_v2_without_content_type)
@pytest.mark.parametrize("path,content_type",
                         [(path, ct) for path in ("/predict", "/v1/models/linear:predict", "/v2/models/linear/infer")
                          for ct in WRONG_TYPES if not (ct is None and path.startswith("/v2/"))])
def test_wrong_content_type(linear, path, content_type):
    data = orjson.dumps({"inputs": ARTICLE_INPUT})
    resp = linear.post(path, data=data, **({"content_type": content_type} if content_type else {}))
    assert "Content-Type" in assert_error(resp, 415)


def test_v2_without_content_type(linear):
    """Triton's own clients send no Content-Type; Triton accepts that, so this server does too."""
    resp = linear.post("/v2/models/linear/infer", data=orjson.dumps(v2_body([1, 2, 3], [1, 3])))
    assert resp.status_code == 200 and resp.get_json()["outputs"][0]["data"] == [pytest.approx(0.6)]


def test_json_content_type_with_charset(linear):
    resp = post(linear, "/predict", {"inputs": ARTICLE_INPUT}, content_type="application/json; charset=utf-8")
    assert resp.status_code == 200


def test_unknown_model_name(linear):
    assert "nope" in assert_error(post(linear, "/v2/models/nope/infer", v2_body([1, 2, 3], [1, 3])), 404)
    assert_error(linear.get("/v2/models/nope/ready"), 404)


def test_unknown_route_and_wrong_method(linear):
    assert_error(linear.get("/nope"), 404)
    assert_error(post(linear, "/v3/models/linear:predict", {"inputs": ARTICLE_INPUT}), 404)
    assert_error(linear.get("/predict"), 405)
    assert_error(linear.put("/v2/models/linear/infer", data=b"{}", content_type=JSON), 405)
    assert_error(linear.post("/v2/health/ready"), 405)


# --- property test: arbitrary JSON never gives a 5xx ---------------------------------------------

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8))
json_values = st.recursive(json_scalars,
                           lambda children: st.lists(children, max_size=6)
                           | st.dictionaries(st.text(max_size=6), children, max_size=4),
                           max_leaves=40)
numbers = st.integers(min_value=-1000, max_value=1000) | st.floats(width=32, allow_nan=False)
rowish = st.lists(st.lists(numbers | json_scalars, min_size=0, max_size=5), max_size=5)
v2_tensor = st.fixed_dictionaries(
    {"name": st.just("input-0") | json_values,
     "shape": st.lists(st.integers(min_value=-2, max_value=6), min_size=0, max_size=3) | json_values,
     "datatype": st.sampled_from(["FP32", "INT64", "BYTES"]) | json_values,
     "data": rowish | st.lists(numbers | json_scalars, max_size=12) | json_values},
    optional={"parameters": json_values})
documents = (json_values
             | st.fixed_dictionaries({"inputs": rowish | json_values})
             | st.fixed_dictionaries({"instances": rowish | json_values})
             | st.fixed_dictionaries({"inputs": st.lists(v2_tensor | json_values, max_size=2)},
                                     optional={"id": json_values, "outputs": json_values}))


def _encode(doc, nan_literals: bool) -> bytes:
    if nan_literals:  # the standard library writes NaN/Infinity literals, which are not JSON
        return json.dumps(doc).encode()
    try:
        return orjson.dumps(doc)  # writes null for NaN/Infinity
    except TypeError:  # integers beyond 64 bits: the standard library writes them
        return json.dumps(doc).encode()


PROPERTY_CLIENTS: dict = {}


def _property_client(framework):
    if framework not in PROPERTY_CLIENTS:
        PROPERTY_CLIENTS[framework] = make_client(framework, model="linear", max_rows=4)
    return PROPERTY_CLIENTS[framework]


@pytest.mark.parametrize("framework_", FRAMEWORKS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents, nan_literals=st.booleans(),
       path=st.sampled_from(["/predict", "/v1/models/linear:predict", "/v2/models/linear/infer"]))
def test_arbitrary_json_never_5xx(framework_, doc, nan_literals, path):
    resp = post(_property_client(framework_), path, _encode(doc, nan_literals))
    assert resp.status_code < 500, resp.get_data(as_text=True)
    assert resp.mimetype == JSON
    body = resp.get_json()
    if resp.status_code == 200:
        v2 = path.startswith("/v2/")
        assert ("outputs" in body) if v2 else ("predictions" in body)
        values = body["outputs"][0]["data"] if v2 else body["predictions"]
        assert all(math.isfinite(v) for v in np.asarray(values, dtype=float).ravel())
    else:
        assert 400 <= resp.status_code < 500 and isinstance(body["error"], str)


# --- weights -------------------------------------------------------------------------------------

def _predict_with(path, rows=ARTICLE_INPUT):
    model = build_model("linear", weights=str(path))
    with torch.inference_mode():
        return model(torch.tensor(rows, dtype=torch.float32)).numpy()


@pytest.mark.parametrize("bundle", [False, True], ids=["state_dict", "bundle"])
def test_dummy_weights_command(tmp_path, bundle, capsys):
    path = tmp_path / "simple_model.pt"
    assert weights_cmd.main(["dummy", str(path)] + (["--bundle"] if bundle else [])) == 0
    assert "Saved" in capsys.readouterr().out
    assert _predict_with(path) == pytest.approx(np.array([[0.6]]), rel=1e-6)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if bundle:
        assert raw["input_size"] == 3 and raw["notes"] and raw["created_at"]
        assert set(raw["model_state"]) == {"linear.weight", "linear.bias"}
    else:
        assert set(raw) == {"linear.weight", "linear.bias"}


def test_train_weights_command(tmp_path):
    _, loss_start = weights_cmd.trained_model(epochs=1)
    _, loss_end = weights_cmd.trained_model(epochs=200)
    assert loss_end < loss_start / 2
    path = tmp_path / "trained.pt"
    assert weights_cmd.main(["train", str(path), "--bundle"]) == 0
    preds = _predict_with(path, weights_cmd.ARTICLE_X)
    err = float(np.mean((preds - np.array(weights_cmd.ARTICLE_Y)) ** 2))
    assert err == pytest.approx(loss_end, rel=1e-3, abs=1e-6)
    client = make_client(model="linear", weights=str(path))
    got = post(client, "/predict", {"inputs": weights_cmd.ARTICLE_X}).get_json()["predictions"]
    assert np.asarray(got) == pytest.approx(preds, abs=1e-6)


def test_shape_mismatch_is_refused_clearly(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save({"linear.weight": torch.zeros(1, 4), "linear.bias": torch.zeros(1)}, path)
    with pytest.raises(WeightsError) as info:
        build_model("linear", weights=str(path))
    assert "linear.weight: file has [1, 4], model needs [1, 3]" in str(info.value)
    linear_file = tmp_path / "linear.pt"
    torch.save(SimpleModel().state_dict(), linear_file)
    with pytest.raises(WeightsError) as info:
        check_weights(REGISTRY["mlp"], read_state_dict(str(linear_file)))
    message = str(info.value)
    assert "do not fit model 'mlp'" in message and "missing net.0.weight" in message
    assert "unexpected linear.weight" in message
    with pytest.raises(WeightsError, match="no weights"):
        check_weights(REGISTRY["noop"], read_state_dict(str(linear_file)))


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['EVIL_MARKER']}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_arbitrary_pickle_is_refused(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("EVIL_MARKER", str(marker))
    path = tmp_path / "evil.pt"
    torch.save({"model_state": SimpleModel().state_dict(), "payload": _Evil()}, path)
    with pytest.raises(WeightsError, match="cannot read weights file"):
        read_state_dict(str(path))
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(WeightsError):
        build_model("linear", weights=str(plain))
    assert not marker.exists()


def test_missing_and_non_state_dict_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(str(tmp_path / "absent.pt"))
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], path)
    with pytest.raises(WeightsError, match="no state_dict"):
        read_state_dict(str(path))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsError, match="cannot read"):
        read_state_dict(str(garbage))


# --- DynamicBatcher ------------------------------------------------------------------------------

class RecordingForward:
    """Doubles its input; records batch sizes; optional delay, gate and poison value."""

    def __init__(self, delay_s: float = 0.0, poison: float | None = None) -> None:
        self.delay_s = delay_s
        self.poison = poison
        self.batches: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(matrix.shape[0])
        self.entered.set()
        self.gate.wait(10)
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.poison is not None and (matrix == self.poison).any():
            raise ValueError("poisoned input")
        return matrix[:, :1] * 2.0


@pytest.fixture
def batchers():
    made = []

    def make(forward, **kwargs):
        params = dict(max_batch=8, max_wait_s=0.005, queue_limit=64, timeout_s=5.0)
        params.update(kwargs)
        batcher = DynamicBatcher(forward, **params)
        made.append(batcher)
        return batcher

    yield make
    for batcher in made:
        batcher.close()


def _row(i: int, rows: int = 1) -> np.ndarray:
    return np.full((rows, 3), float(i), dtype=np.float32)


def test_batcher_concurrent_requests_get_their_own_rows(batchers):
    forward = RecordingForward(delay_s=0.01)
    batcher = batchers(forward, max_batch=8)

    def call(i):
        rows = 1 + i % 3
        result = batcher.submit(_row(i, rows))
        return i, rows, result

    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(64)))
    for i, rows, result in results:
        assert result.outputs.shape == (rows, 1)
        assert (result.outputs == 2.0 * i).all()
        assert rows <= result.batch_rows <= 8
    assert sum(forward.batches) == sum(rows for _, rows, _ in results)
    assert max(forward.batches) > 1, forward.batches
    assert all(b <= 8 for b in forward.batches)


def test_batches_form_under_concurrency(batchers):
    forward = RecordingForward(delay_s=0.02)
    batcher = batchers(forward, max_batch=16)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: batcher.submit(_row(i)), range(48)))
    assert max(r.batch_rows for r in results) > 1
    assert len(forward.batches) < 48
    assert any(r.queue_s > 0 for r in results)


def test_announced_requests_are_waited_for(batchers):
    """submit_parsed: while a batch-mate is still parsing, the batcher waits for it (up to max_wait)."""
    forward = RecordingForward()
    batcher = batchers(forward, max_batch=2, max_wait_s=2.0)
    slow_parse_started = threading.Event()

    def slow_parse():
        slow_parse_started.set()
        time.sleep(0.1)
        return _row(1)

    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(batcher.submit_parsed, slow_parse)
        slow_parse_started.wait(5)
        fast = pool.submit(batcher.submit_parsed, lambda: _row(2))
        assert fast.result(5).batch_rows == 2 and slow.result(5).batch_rows == 2
    assert forward.batches == [2]


@pytest.mark.parametrize("announced", [False, True], ids=["submit", "submit_parsed"])
def test_lone_request_does_not_wait_max_wait(batchers, announced):
    """With max_wait 20 s, a lone request that waited for batch-mates would take 20 s; it must be
    served at once (well inside half of that, whatever the machine's load)."""
    max_wait = 20.0
    batcher = batchers(RecordingForward(), max_batch=32, max_wait_s=max_wait, timeout_s=60.0)
    for i in range(3):
        t0 = time.perf_counter()
        result = batcher.submit_parsed(lambda i=i: _row(i)) if announced else batcher.submit(_row(i))
        assert time.perf_counter() - t0 < max_wait / 2, "a lone request waited for batch-mates"
        assert result.batch_rows == 1 and result.outputs[0, 0] == 2.0 * i


def test_failed_parse_does_not_stall_the_batcher(batchers):
    """An announced request whose parse fails must not leave the batcher waiting (max_wait 20 s)
    for a batch-mate that will never come."""
    max_wait = 20.0
    batcher = batchers(RecordingForward(), max_batch=8, max_wait_s=max_wait, timeout_s=60.0)

    def bad_parse():
        raise ValueError("bad body")

    with pytest.raises(ValueError):
        batcher.submit_parsed(bad_parse)
    t0 = time.perf_counter()
    assert batcher.submit(_row(3)).outputs[0, 0] == 6.0
    assert time.perf_counter() - t0 < max_wait / 2, "the batcher waited for the failed request"


def test_full_queue_raises_overloaded(batchers):
    forward = RecordingForward()
    forward.gate.clear()
    batcher = batchers(forward, max_batch=1, max_wait_s=0.0, queue_limit=2)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(batcher.submit, _row(0))
        assert forward.entered.wait(5)
        queued = [pool.submit(batcher.submit, _row(i)) for i in (1, 2)]
        deadline = time.monotonic() + 5
        while batcher.depth < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert batcher.depth == 2
        with pytest.raises(Overloaded, match="full") as info:
            batcher.submit(_row(9))
        assert info.value.retry_after_s >= 1
        forward.gate.set()
        assert running.result(5).outputs[0, 0] == 0.0
        assert [f.result(5).outputs[0, 0] for f in queued] == [2.0, 4.0]


def test_one_bad_input_fails_only_itself(batchers):
    forward = RecordingForward(poison=-1.0)
    forward.gate.clear()
    batcher = batchers(forward, max_batch=8, max_wait_s=0.0)
    with ThreadPoolExecutor(8) as pool:
        plug = pool.submit(batcher.submit, _row(100))
        assert forward.entered.wait(5)
        values = [1, 2, -1, 3, 4]
        futures = {v: pool.submit(batcher.submit, _row(v)) for v in values}
        deadline = time.monotonic() + 5
        while batcher.depth < len(values) and time.monotonic() < deadline:
            time.sleep(0.005)
        forward.gate.set()
        assert plug.result(5).outputs[0, 0] == 200.0
        with pytest.raises(ValueError, match="poisoned"):
            futures[-1].result(5)
        for v in (1, 2, 3, 4):
            assert futures[v].result(5).outputs[0, 0] == 2.0 * v
    assert len(values) in forward.batches  # the mixed batch was tried once, then one by one


def test_request_times_out_in_queue(batchers):
    forward = RecordingForward()
    forward.gate.clear()
    batcher = batchers(forward, max_batch=1, max_wait_s=0.0, timeout_s=0.2)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(batcher.submit, _row(1))
        assert forward.entered.wait(5)
        t0 = time.perf_counter()
        with pytest.raises(Overloaded, match="waited"):  # the forward stays blocked: only the timeout ends it
            batcher.submit(_row(2))
        assert time.perf_counter() - t0 >= 0.15  # not before its 0.2 s timeout (less a timer's slack)
        assert batcher.depth == 0
        forward.gate.set()
        assert running.result(5).outputs[0, 0] == 2.0  # a running forward is waited for


def test_closed_batcher_refuses(batchers):
    batcher = batchers(RecordingForward())
    batcher.close()
    with pytest.raises(Overloaded, match="shutting down"):
        batcher.submit(_row(1))


# --- configuration -------------------------------------------------------------------------------

def test_default_config_is_valid():
    assert ServerConfig().problems() == []
    assert ServerConfig(model="mlp", workers=2, worker_class="gthread", threads=8,
                        max_batch=16).problems() == []


@pytest.mark.parametrize("settings_,fragment", [
    (dict(worker_class="sync", threads=4), "threads: sync workers"),
    (dict(max_batch=8), "max_batch: dynamic batching needs"),
    (dict(max_batch=8, worker_class="gthread", threads=1), "max_batch: dynamic batching needs"),
    (dict(max_batch=8, worker_class="gthread", threads=8, lock="global"), "lock: the batcher"),
    (dict(model="resnet"), "unknown model"),
    (dict(worker_class="gevent"), "worker_class"),
    (dict(lock="rw"), "lock"),
    (dict(workers=0), "workers: must be at least 1"),
    (dict(torch_threads=0), "torch_threads"),
    (dict(max_wait_ms=-1), "max_wait_ms: must not be negative"),
    (dict(port=70000), "port"),
    (dict(max_body_bytes=0), "max_body_bytes"),
])
def test_config_problems(settings_, fragment):
    problems = ServerConfig(**settings_).problems()
    assert any(fragment in p for p in problems), problems


def test_config_reports_every_problem_at_once():
    assert len(ServerConfig(workers=0, threads=0, port=-1).problems()) >= 3


def test_torch_threads_never_oversubscribe():
    from target_server.config import available_cores

    cores = available_cores()
    for workers in (1, 2, 3, 8):
        config = ServerConfig(workers=workers)
        assert config.resolved_torch_threads >= 1
        assert workers * config.resolved_torch_threads <= max(cores, workers)
    assert ServerConfig(torch_threads=3).resolved_torch_threads == 3


def test_config_from_mapping_env_and_cli():
    with pytest.raises(ValueError, match="wrokers"):
        ServerConfig.from_mapping({"wrokers": 2})
    env = env_defaults({"TARGET_SERVER_WORKERS": "3", "TARGET_SERVER_MAX_WAIT_MS": "1.5",
                        "TARGET_SERVER_EXIT_WITH_PARENT": "yes", "TARGET_SERVER_MODEL": "mlp"})
    assert env == {"workers": 3, "max_wait_ms": 1.5, "exit_with_parent": True, "model": "mlp"}
    config = config_from_args(["--model", "mlp", "--workers", "2", "--worker-class", "gthread",
                               "--threads", "8", "--port", "8000", "--max-batch", "16"])
    assert (config.model, config.workers, config.threads, config.port, config.max_batch) == ("mlp", 2, 8, 8000, 16)
    assert config.host == "127.0.0.1" and config.problems() == []
    assert "max_batch=16" in config.describe()


def test_app_factory_exposes_config():
    app = make_app(model="noop", worker_class="gthread", threads=2, lock="global")
    assert app.extensions["target_server"]["config"].lock == "global"


def test_the_real_target_server_package_is_imported_not_a_test_folder():
    """tests/server/ is named so it can never shadow the package it tests."""
    import target_server
    from tests.support import ROOT

    assert __name__.startswith("tests.server.")
    assert target_server.__file__ == str(ROOT / "target_server" / "__init__.py")
