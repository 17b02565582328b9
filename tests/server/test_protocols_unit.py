"""Triton v2 extras (server metadata, model config, statistics, binary tensors) and KServe v1, in
process on both web layers; the batcher awaited from an event loop."""
from __future__ import annotations

import asyncio
import struct
import threading

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from target_server import readiness
from target_server.batching import DynamicBatcher, Overloaded
from target_server.config import FRAMEWORKS
from tests.support.server_fixtures import ARTICLE_INPUT, make_client

JSON = "application/json"
V2 = "/v2/models/linear/infer"


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.delenv(readiness.STATE_DIR_ENV, raising=False)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def framework(request):
    return request.param


@pytest.fixture(scope="module")
def linear(framework):
    return make_client(framework, model="linear", max_rows=4)


def binary_body(matrix: np.ndarray, datatype: str = "FP32", *, size: int | None = None, binary_out: bool = True,
                output: str = "output-0", **extra) -> tuple[bytes, dict[str, str]]:
    raw = matrix.tobytes()
    header = orjson.dumps({"inputs": [{"name": "input-0", "shape": list(matrix.shape), "datatype": datatype,
                                       "parameters": {"binary_data_size": len(raw) if size is None else size}}],
                           "outputs": [{"name": output, "parameters": {"binary_data": binary_out}}], **extra})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def split_answer(resp) -> tuple[dict, bytes]:
    length = int(resp.headers["Inference-Header-Content-Length"])
    return orjson.loads(resp.data[:length]), resp.data[length:]


def assert_error(resp, status):
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True))
    assert resp.mimetype == JSON
    return resp.get_json()["error"]


# --- binary tensors ------------------------------------------------------------------------------

@pytest.mark.parametrize("datatype,dtype", [("FP32", "<f4"), ("FP64", "<f8"), ("INT32", "<i4"), ("UINT8", "u1")])
def test_binary_in_binary_out(linear, datatype, dtype):
    matrix = np.array([[1, 2, 3], [4, 5, 6]], dtype=dtype)
    body, headers = binary_body(matrix, datatype, id="b-1")
    resp = linear.post(V2, data=body, headers=headers, content_type="application/octet-stream")
    assert resp.status_code == 200 and resp.mimetype == "application/octet-stream"
    doc, raw = split_answer(resp)
    assert doc["id"] == "b-1" and doc["outputs"][0]["shape"] == [2, 1]
    assert doc["outputs"][0]["parameters"]["binary_data_size"] == len(raw) == 8 and "data" not in doc["outputs"][0]
    assert struct.unpack("<2f", raw) == pytest.approx((0.6, 1.5))
    assert "Server-Timing" in resp.headers


def test_binary_in_json_out_and_json_in_binary_out(linear):
    body, headers = binary_body(np.array([[1, 2, 3]], dtype="<f4"), binary_out=False)
    resp = linear.post(V2, data=body, headers=headers)  # no Content-Type at all, as tritonclient sends
    assert resp.status_code == 200 and resp.mimetype == JSON
    assert resp.get_json()["outputs"][0]["data"] == [pytest.approx(0.6)]
    doc = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
           "parameters": {"binary_data_output": True}}
    resp = linear.post(V2, data=orjson.dumps(doc), content_type=JSON)
    _, raw = split_answer(resp)
    assert struct.unpack("<f", raw) == pytest.approx((0.6,))


ONE_ROW = np.array([[1, 2, 3]], dtype="<f4")
HEADER_ONLY = orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32",
                                        "parameters": {"binary_data_size": 12}}]})


def _bad_binary() -> dict[str, tuple[bytes, dict[str, str], int, str]]:
    ok, ok_headers = binary_body(ONE_ROW)
    size_lies, size_headers = binary_body(ONE_ROW, size=16)
    wrong_dtype, dtype_headers = binary_body(ONE_ROW.astype("<f8"), "FP32", size=24)
    two_rows_claimed = binary_body(ONE_ROW)[0].replace(b'"shape":[1,3]', b'"shape":[2,3]')
    return {
        "header length not a number": (ok, {"Inference-Header-Content-Length": "twelve"}, 400, "number of bytes"),
        "header length past the body": (ok, {"Inference-Header-Content-Length": str(len(ok) + 1)}, 400,
                                        "the body has"),
        "negative header length": (ok, {"Inference-Header-Content-Length": "-1"}, 400, "the body has"),
        "header cut inside the JSON": (ok, {"Inference-Header-Content-Length": "10"}, 400, "invalid JSON"),
        "declared size differs from the bytes sent": (size_lies, size_headers, 400, "binary_data_size 16"),
        "bytes do not fit shape and datatype": (wrong_dtype, dtype_headers, 400, "needs 12"),
        "shape claims more rows than the bytes": (two_rows_claimed, ok_headers, 400, "needs 24"),
        "binary size without the header": (HEADER_ONLY + ONE_ROW.tobytes(), {}, 400, "invalid JSON"),
        "binary size, header but no bytes": (HEADER_ONLY, {"Inference-Header-Content-Length": str(len(HEADER_ONLY))},
                                             400, "0 bytes follow"),
        "stray bytes after a JSON tensor": (orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 3],
                                                                      "datatype": "FP32", "data": [1, 2, 3]}]})
                                            + b"xxxx", {}, 400, "invalid JSON"),
        "NaN bytes": binary_body(np.array([[np.nan, 1, 2]], dtype="<f4")) + (400, "finite"),
        "float32 overflow from FP64": binary_body(np.array([[1e300, 1, 2]], dtype="<f8"), "FP64") + (400, "finite"),
        "too many rows": binary_body(np.ones((5, 3), dtype="<f4")) + (413, "limit is 4"),
        "wrong width": binary_body(np.ones((1, 4), dtype="<f4")) + (400, "expects"),
        "unknown output": binary_body(ONE_ROW, output="scores") + (400, "output-0"),
        "negative binary size": binary_body(ONE_ROW, size=-1) + (400, "non-negative"),
        "gzip body": (ok, {**ok_headers, "Content-Encoding": "gzip"}, 415, "Content-Encoding"),
    }


BAD_BINARY = _bad_binary()


@pytest.mark.parametrize("body,headers,status,fragment", BAD_BINARY.values(), ids=BAD_BINARY.keys())
def test_bad_binary_requests_get_a_located_4xx(linear, body, headers, status, fragment):
    assert fragment.lower() in assert_error(linear.post(V2, data=body, headers=headers), status).lower()


def test_data_and_binary_size_together_is_refused(linear):
    header = orjson.dumps({"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3],
                                       "parameters": {"binary_data_size": 12}}]})
    resp = linear.post(V2, data=header + ONE_ROW.tobytes(), headers={"Inference-Header-Content-Length": str(len(header))})
    assert "both" in assert_error(resp, 400)


@pytest.mark.parametrize("framework_", FRAMEWORKS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=st.binary(max_size=80) | st.just(HEADER_ONLY), tail=st.binary(max_size=40),
       length=st.integers(min_value=-3, max_value=200) | st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=4))
def test_arbitrary_binary_bodies_never_5xx(framework_, header, tail, length):
    client = _clients.setdefault(framework_, make_client(framework_, model="linear", max_rows=4))
    resp = client.post(V2, data=header + tail, headers={"Inference-Header-Content-Length": str(length)})
    assert 200 <= resp.status_code < 500, resp.get_data(as_text=True)
    if resp.status_code != 200:
        assert isinstance(resp.get_json()["error"], str)


_clients: dict = {}


# --- KServe v1 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["instances", "inputs"])
def test_v1_predict(linear, key):
    resp = linear.post("/v1/models/linear:predict", json={key: [[1, 2, 3], [4, 5, 6]]})
    assert resp.status_code == 200 and "Server-Timing" in resp.headers
    assert resp.get_json() == {"predictions": [[pytest.approx(0.6)], [pytest.approx(1.5)]]}


@pytest.mark.parametrize("path,doc,status,fragment", [
    ("/v1/models/linear:predict", {"instances": [[1, 2]]}, 400, "expects 3"),
    ("/v1/models/linear:predict", {"instances": [[1, 2, 3]], "inputs": [[1, 2, 3]]}, 400, "exactly one"),
    ("/v1/models/linear:predict", {"rows": [[1, 2, 3]]}, 400, "instances"),
    ("/v1/models/linear:predict", {"instances": [[1, 2, 3]] * 5}, 413, "limit is 4"),
    ("/v1/models/nope:predict", {"instances": ARTICLE_INPUT}, 404, "nope"),
])
def test_v1_bad_requests(linear, path, doc, status, fragment):
    assert fragment in assert_error(linear.post(path, json=doc), status)


def test_v1_readiness(linear):
    assert linear.get("/v1/models/linear").get_json() == {"name": "linear", "ready": True}
    assert_error(linear.get("/v1/models/nope"), 404)
    assert "POST" in assert_error(linear.get("/v1/models/linear:predict"), 405)


# --- v2 documents --------------------------------------------------------------------------------

def test_server_metadata(linear):
    doc = linear.get("/v2").get_json()
    assert doc["name"] == "target_server" and {"binary_tensor_data", "statistics"} <= set(doc["extensions"])


@pytest.mark.parametrize("framework_", FRAMEWORKS)
def test_model_config_reflects_rows_and_batching(framework_):
    extra = {"worker_class": "gthread", "threads": 4} if framework_ == "flask" else {}
    plain = make_client(framework_, model="mlp", max_rows=64, torch_threads=1, **extra).get("/v2/models/mlp/config")
    doc = plain.get_json()
    assert doc["max_batch_size"] == 64 and "dynamic_batching" not in doc
    assert doc["input"] == [{**doc["input"][0], "name": "input-0", "data_type": "TYPE_FP32", "dims": [256]}]
    assert doc["output"][0]["dims"] == [10] and doc["output"][0]["data_type"] == "TYPE_FP32"
    batched = make_client(framework_, model="mlp", max_batch=16, max_wait_ms=3, torch_threads=1, **extra)
    doc = batched.get("/v2/models/mlp/versions/1/config").get_json()
    assert doc["dynamic_batching"]["preferred_batch_size"] == [16]
    assert doc["dynamic_batching"]["max_queue_delay_microseconds"] == 3000
    assert_error(batched.get("/v2/models/linear/config"), 404)


def test_statistics_count_exactly(framework):
    client = make_client(framework, model="linear")

    def stats():
        (model,) = client.get("/v2/models/linear/stats").get_json()["model_stats"]
        return model

    before = stats()
    for rows in (1, 2, 3):
        assert client.post("/predict", json={"inputs": [[1, 2, 3]] * rows}).status_code == 200
    assert client.post("/predict", json={"inputs": [[1, 2]]}).status_code == 400
    after = stats()
    inc = {k: after["inference_stats"][k]["count"] - before["inference_stats"][k]["count"]
           for k in ("success", "fail", "queue", "compute_infer")}
    assert inc == {"success": 3, "fail": 1, "queue": 3, "compute_infer": 3}
    assert after["inference_count"] - before["inference_count"] == 6  # rows
    assert after["execution_count"] - before["execution_count"] == 3  # forwards
    assert after["inference_stats"]["success"]["ns"] > before["inference_stats"]["success"]["ns"]
    assert after["last_inference"] >= before["last_inference"] > 0
    assert client.get("/v2/models/stats").get_json()["model_stats"][0]["name"] == "linear"
    assert_error(client.get("/v2/models/nope/stats"), 404)


# --- the batcher from an event loop --------------------------------------------------------------

def test_async_requests_share_forwards_and_get_their_own_rows():
    seen: list[int] = []
    gate = threading.Event()

    def forward(matrix):
        gate.wait(10)  # the first forward holds on until every request is queued
        seen.append(matrix.shape[0])
        return matrix[:, :1] * 2

    batcher = DynamicBatcher(forward, max_batch=8, max_wait_s=0.0, queue_limit=64, timeout_s=20)

    async def main():
        rows = [np.full((1, 3), i, dtype=np.float32) for i in range(6)]
        tasks = [asyncio.ensure_future(batcher.submit_parsed_async(lambda r=r: r)) for r in rows]
        await asyncio.sleep(0)  # each task runs to its first await: parsed and queued, none answered
        assert not any(task.done() for task in tasks)
        gate.set()
        return await asyncio.gather(*tasks)

    try:
        results = asyncio.run(main())
    finally:
        batcher.close()
    assert [float(r.outputs[0, 0]) for r in results] == [2.0 * i for i in range(6)]
    # the first forward may have taken one request before the others queued; the rest share one
    assert sum(seen) == 6 and len(seen) <= 2


def test_async_request_times_out_in_queue_with_503():
    gate = threading.Event()
    batcher = DynamicBatcher(lambda m: (gate.wait(10), m)[1], max_batch=1, max_wait_s=0.0, queue_limit=8,
                             timeout_s=0.2)

    async def main():
        first = asyncio.ensure_future(batcher.submit_parsed_async(lambda: np.ones((1, 3), np.float32)))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="waited"):
            await batcher.submit_parsed_async(lambda: np.ones((1, 3), np.float32))
        gate.set()
        return await first

    try:
        assert asyncio.run(main()).batch_rows == 1
    finally:
        gate.set()
        batcher.close()
