"""The bundled generative model served for real (gunicorn, gthread, continuous batching) and driven
over sockets: the OpenAI answers streamed and whole, the hostile-request corpus (4xx JSON, never a
5xx), a client that goes away freeing its sequence while another stream goes on, a full queue's
503 with Retry-After, and `harness run` with generative scenarios against it in both engines."""
from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
import requests

from target_server.generative.openai_api import CHAT, COMPLETIONS
from tests.server.test_tinylm_unit import HOSTILE
from tests.support.cli import assert_exit, harness, wait_until
from tests.support.server_fixtures import RunningServer, start_server

pytestmark = pytest.mark.e2e

MAX_BATCH = 2


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with start_server(["--model", "tinylm", "--worker-class", "gthread", "--threads", "8",
                       "--max-batch", str(MAX_BATCH), "--queue-limit", "1"]) as running:
        yield running


def active_sequences(url: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    match = re.search(r"^generation_active_sequences(?:\{[^}]*\})? (\S+)$", text, re.M)
    assert match, "no generation_active_sequences in /metrics"
    return float(match.group(1))


class RawStream:
    """A streaming request on its own socket, read as it comes, closed when the test says so."""

    def __init__(self, url: str, max_tokens: int, prompt: str = "a long story: ") -> None:
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        body = orjson.dumps({"prompt": prompt, "max_tokens": max_tokens, "stream": True, "temperature": 0})
        self.sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        self.received = b""

    def read_until(self, count: int, timeout: float = 20) -> bytes:
        """Read until `count` data events came (or the stream ended); the whole text so far."""
        deadline = time.monotonic() + timeout
        while self.received.count(b"data: ") < count and time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.received += chunk
        return self.received

    def close(self) -> None:
        self.sock.close()


def post(url: str, path: str, doc: dict, **kw) -> requests.Response:
    return requests.post(f"{url}{path}", json=doc, timeout=60, **kw)


def sse_documents(body: str) -> list[dict]:
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def test_streamed_and_whole_answers_carry_exactly_max_tokens_and_the_same_greedy_text(server):
    url = server.url
    models = requests.get(f"{url}/v1/models", timeout=5).json()
    assert [m["id"] for m in models["data"]] == ["tinylm"]
    ask = {"model": "tinylm", "messages": [{"role": "user", "content": "tell me something"}], "max_tokens": 40,
           "temperature": 0}
    whole = post(url, CHAT, ask)
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "application/json"
    timing = dict(re.findall(r"(\w+);dur=([\d.]+)", whole.headers["Server-Timing"]))
    assert set(timing) == {"ttft", "decode", "total"} and float(timing["total"]) >= float(timing["ttft"]) > 0
    answer = whole.json()
    assert answer["usage"]["completion_tokens"] == 40 and answer["choices"][0]["finish_reason"] == "length"
    text = answer["choices"][0]["message"]["content"]
    assert len(text) == 40  # one token, one character
    assert answer["usage"]["prompt_tokens"] == len(b"user: tell me something\nassistant: ")

    streamed = post(url, CHAT, {**ask, "stream": True, "stream_options": {"include_usage": True}})
    assert streamed.status_code == 200 and streamed.headers["Content-Type"].startswith("text/event-stream")
    docs = sse_documents(streamed.text)
    content = "".join(d["choices"][0]["delta"].get("content", "") for d in docs if d["choices"])
    assert content == text  # greedy: the same text, streamed or whole
    assert docs[0]["choices"][0]["delta"]["role"] == "assistant"
    assert docs[-1]["usage"]["completion_tokens"] == 40 and docs[-1]["choices"] == []

    stop = text[10:12]
    stopped = post(url, CHAT, {**ask, "stop": [stop]}).json()["choices"][0]
    assert stopped["finish_reason"] == "stop" and stopped["message"]["content"] == text[:text.find(stop)]


@pytest.mark.parametrize("path,body,status,param,code",
                         [case for case in HOSTILE if case[4] != "context_length_exceeded"])
def test_the_hostile_corpus_gets_openai_errors_over_http(server, path, body, status, param, code):
    response = requests.post(f"{server.url}{path}", data=body, headers={"Content-Type": "application/json"},
                             timeout=10)
    assert response.status_code == status and response.headers["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code) and error["message"]


def test_transport_level_abuse_is_4xx_json_and_the_server_stays_up(server):
    url = server.url
    long_prompt = {"prompt": "x" * 2040, "max_tokens": 16}
    cases = [
        requests.post(f"{url}{COMPLETIONS}", json=long_prompt, timeout=10),
        requests.post(f"{url}{CHAT}", data=b"{}", headers={"Content-Type": "text/plain"}, timeout=10),
        requests.post(f"{url}{CHAT}", data=b"x" * (2 << 20), headers={"Content-Type": "application/json"},
                      timeout=10),
        requests.post(f"{url}{CHAT}", data="{\"messages\": [{\"role\": \"user\", \"content\": \"\udcff\"}]}"
                      .encode("utf-8", "surrogatepass"), headers={"Content-Type": "application/json"}, timeout=10),
        requests.get(f"{url}{CHAT}", timeout=10),
        requests.post(f"{url}/predict", json={"inputs": [[1.0]]}, timeout=10),
    ]
    for response in cases:
        assert 400 <= response.status_code < 500, (response.request.url, response.status_code, response.text)
        assert response.headers["Content-Type"].startswith("application/json")
    assert cases[0].json()["error"]["code"] == "context_length_exceeded"
    assert [c.status_code for c in cases[1:3]] == [415, 413]
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200


def test_a_client_that_disconnects_mid_stream_frees_its_sequence_while_another_goes_on(server):
    url = server.url
    assert wait_until(lambda: active_sequences(url) == 0, 20, "an idle server")
    keep, leave = RawStream(url, 1900), RawStream(url, 1900, prompt="another long story: ")
    try:
        keep.read_until(3), leave.read_until(3)
        assert wait_until(lambda: active_sequences(url) == 2, 10, "two active sequences")
        leave.close()
        assert wait_until(lambda: active_sequences(url) == 1, 10, "the batch to shrink to one")
        before = keep.received.count(b"data: ")
        keep.read_until(before + 20)
        assert keep.received.count(b"data: ") >= before + 20  # the other stream goes on
    finally:
        keep.close()
        leave.close()
    assert wait_until(lambda: active_sequences(url) == 0, 10, "both sequences freed")


def test_a_full_queue_answers_503_with_retry_after(server):
    """Two long streams hold both rows, one request waits (queue_limit 1): the next is refused."""
    url = server.url
    assert wait_until(lambda: active_sequences(url) == 0, 20, "an idle server")
    holders = [RawStream(url, 1900) for _ in range(MAX_BATCH)]
    waiter = None
    try:
        for h in holders:
            h.read_until(2)
        waiter = RawStream(url, 4)
        time.sleep(0.3)  # it is queued behind the full batch
        refused = post(url, COMPLETIONS, {"prompt": "one more", "max_tokens": 4, "stream": True})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "overloaded"
    finally:
        for s in [*holders, *([waiter] if waiter else [])]:
            s.close()
    assert wait_until(lambda: active_sequences(url) == 0, 10, "every sequence freed")


def scenario(tmp_path: Path, *, api: str, engine: str, tls: bool) -> Path:
    path = tmp_path / f"tinylm-{engine}.yaml"
    path.write_text(f"""name: tinylm-{engine}
target:
  server: {{model: tinylm, worker_class: gthread, threads: 8, max_batch: 4, tls: {str(tls).lower()}}}
  api: {api}
  timeout: 30s
  prompts: {{input_tokens: {{mean: 8}}, output_tokens: {{mean: 12}}}}
engine: {engine}
load: {{start: 3, stages: [{{duration: 3s, target: 3}}]}}
goodput: {{ttft_ms: 5000}}
thresholds: ["ttft_ms.p99 < 20000", "error_rate < 0.01"]
""")
    return path


@pytest.mark.parametrize(("api", "engine", "tls"), [("openai-chat", "threadpool", False),
                                                   ("openai-completions", "locust", True)])
def test_harness_runs_a_generative_scenario_against_the_bundled_model(tmp_path, api, engine, tls):
    """Over HTTP with the threadpool engine, over HTTPS (the server's self-signed certificate) with Locust."""
    out = tmp_path / "run"
    result = harness("run", str(scenario(tmp_path, api=api, engine=engine, tls=tls)), "--out", str(out),
                     timeout=180)
    assert_exit(result, 0, out)
    summary = json.loads((out / "summary.json").read_text())
    tokens = summary["tokens"]
    assert summary["errors"] == 0 and summary["requests"] >= 3 and summary["target"]["model"] == "tinylm"
    assert summary["target"]["url"].startswith("https://" if tls else "http://")
    assert tokens["counted_by"] == "usage" and tokens["output_tokens_per_request"] == 12
    assert tokens["output_tokens"] == 12 * summary["requests"]
    assert 0 < tokens["ttft_ms"]["p50"] <= tokens["ttft_ms"]["p99"]
    assert tokens["itl_ms"]["p50"] > 0
