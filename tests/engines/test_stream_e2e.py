"""Generative endpoints end to end: `harness run` with target.api against the fixed-timing streaming
server of benchmarks/ (a real process), over HTTP and HTTPS, with every fault it can play."""
from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pandas as pd
import pytest
import requests

from harness.results.tokens import read_streams
from tests.support.cli import HarnessProcess, assert_exit, harness, wait_until
from tests.support.rawserver import RawServer, read_request
from tests.support.streaming import StreamServer
from tests.support.tls_server import Pki

pytestmark = pytest.mark.e2e

TOKENS = 8


def scenario(tmp_path: Path, url: str, *, api: str = "openai-chat", extra: str = "", target: str = "",
             users: int = 4, seconds: float = 2) -> Path:
    path = tmp_path / "stream.yaml"
    path.write_text(f"name: stream\ntarget: {{url: \"{url}\", api: {api}, timeout: 2s, "
                    f"prompts: {{input_tokens: {{mean: 20}}, output_tokens: {{mean: {TOKENS}}}}}{target}}}\n"
                    f"load: {{start: {users}, stages: [{{duration: {seconds}s, target: {users}}}]}}\n{extra}")
    return path


def run(tmp_path: Path, path: Path, expected: int = 0, name: str = "run") -> tuple[dict, Path]:
    out = tmp_path / name
    result = harness("run", str(path), "--out", str(out))
    assert_exit(result, expected, out)
    return json.loads((out / "summary.json").read_text()), out


@pytest.mark.parametrize(("api", "engine"), [("openai-chat", "threadpool"), ("openai-completions", "threadpool"),
                                            ("openai-chat", "locust"), ("openai-completions", "locust-workers")])
def test_every_token_is_timed_and_never_before_the_server_sent_it(tmp_path: Path, api: str, engine: str) -> None:
    """Each request asks for 8 tokens: the server's usage says 8 and every request has 7 gaps. Each
    request carries an id, and the server keeps when it wrote each token of each id: on the
    machine's one monotonic clock (the run's t0_monotonic joins the two), no request's first or
    last token is stamped before the server wrote it. In both engines; with Locust workers, the
    token entries travel through the master like the rows (put on its clock by wall time, so
    within a millisecond)."""
    extra = {"threadpool": "", "locust": "engine: locust\n",
             "locust-workers": "engine: locust\nlocust: {workers: 2}\n"}[engine]
    with StreamServer(ttft_ms=30, itl_ms=5) as server:
        summary, out = run(tmp_path, scenario(tmp_path, server.url, api=api, extra=extra,
                                              target=", request_id: {header: X-Request-ID}"))
        writes = server.writes()
    tokens = summary["tokens"]
    assert summary["errors"] == 0 and summary["target"]["model"] == "fixed-timing"  # from GET /v1/models
    assert tokens["counted_by"] == "usage" and tokens["output_tokens_per_request"] == TOKENS
    assert tokens["output_tokens"] == TOKENS * summary["requests"]
    assert tokens["input_tokens"] == 20 * summary["requests"]  # the server counted the prompt's 20 words
    assert tokens["ttft_ms"]["p50"] >= 30  # the server's own TTFT
    streams = read_streams(out)
    streams = streams[streams["intended"] < summary["duration_s"]]  # Locust may start one more as it stops
    assert len(streams) == summary["requests"] and (streams["gaps"].map(len) == TOKENS - 1).all()
    assert (streams["first_byte"] <= streams["first_token"]).all() and (streams["last_token"] <= streams["end"]).all()
    assert set(streams["finish_reason"]) == {"length"}
    slack = 1e-3 if engine == "locust-workers" else 1e-5  # the CSV keeps microseconds
    t0 = summary["t0_monotonic"]
    for rid, first, last in zip(streams["request_id"], streams["first_token"], streams["last_token"]):
        written = writes[rid]
        assert len(written) == TOKENS and t0 + first >= written[0] - slack and t0 + last >= written[-1] - slack
    if engine == "locust-workers":
        assert set(streams["gen"]) == {0, 1}  # both workers' rows, each joined to its own tokens
    report = (out / "report.html").read_text()
    assert 'id="tokens"' in report  # the token charts are drawn
    assert 'alt="token timing over time" src="data:image/png' in report
    assert 'alt="token latency distributions" src="data:image/png' in report


def test_https_streams_and_an_unstreamed_answer(tmp_path: Path) -> None:
    """Over TLS with the test CA; and `stream: false`: one JSON answer, TTFT is the whole answer."""
    pki = Pki(tmp_path / "pki")
    with StreamServer(ttft_ms=20, itl_ms=5, certfile=pki.folder / "server.pem") as server:
        tls = f", tls: {{ca_file: {pki.ca_file}}}"
        summary, _ = run(tmp_path, scenario(tmp_path, server.url, target=tls))
        assert server.url.startswith("https://") and summary["errors"] == 0
        assert summary["tokens"]["output_tokens"] == TOKENS * summary["requests"] > 0
        whole, _ = run(tmp_path, scenario(tmp_path, server.url, target=tls + ", stream: false"), name="whole")
    tokens = whole["tokens"]
    assert whole["errors"] == 0 and tokens["output_tokens"] == TOKENS * whole["requests"]
    assert tokens["ttft_ms"]["p50"] >= 20 + 5 * (TOKENS - 1)  # the first token came with the last
    assert tokens["itl_ms"]["p50"] is None


@pytest.mark.parametrize(("fault", "kind", "message", "engine"), [
    ("cut", "closed", None, "threadpool"),
    ("cut", "closed", None, "locust"),
    ("malformed", "protocol", "not JSON", "threadpool"),
    ("malformed", "protocol", "not JSON", "locust"),
    ("hang", "timeout", None, "threadpool"),
    ("error-status", "http", "HTTP 400: max_tokens is too large for this model", "threadpool"),
    ("error-status", "http", "HTTP 400: max_tokens is too large for this model", "locust"),
    ("error-event", "http", "the engine ran out of KV cache", "threadpool"),
])
def test_faults_are_errors_of_their_kind_with_what_was_received(tmp_path: Path, fault: str, kind: str,
                                                                message: str | None, engine: str) -> None:
    with StreamServer(ttft_ms=10, itl_ms=5, fault=fault) as server:
        summary, out = run(tmp_path, scenario(tmp_path, server.url, users=2, seconds=1 if fault != "hang" else 3,
                                              extra=f"engine: {engine}\n"))
    assert summary["requests"] > 0 and summary["errors_by_kind"] == {kind: summary["errors"]}
    assert summary["errors"] == summary["requests"]
    streams = read_streams(out)
    if message is not None:
        assert streams["message"].str.contains(message, regex=False).all(), streams["message"]
    if fault == "cut":  # half the tokens came before the cut, and are kept
        assert (streams["output_tokens"] == TOKENS // 2).all()


@pytest.mark.parametrize(("fault", "engine"), [("quirky", "threadpool"), ("quirky", "locust"),
                                             ("no-usage", "threadpool"), ("close", "threadpool")])
def test_real_servers_variations_are_successes(tmp_path: Path, fault: str, engine: str) -> None:
    """No space after `data:`, CRLF, comments and no [DONE]; no usage chunk (tokens counted by chunks,
    said on the console); a body that ends when the connection closes."""
    with StreamServer(ttft_ms=10, itl_ms=5, fault=fault) as server:
        out = tmp_path / "run"
        result = harness("run", str(scenario(tmp_path, server.url, users=2, seconds=1, extra=f"engine: {engine}\n")),
                         "--out", str(out))
    assert_exit(result, 0, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["errors"] == 0 and summary["tokens"]["output_tokens"] == TOKENS * summary["requests"] > 0
    assert summary["tokens"]["counted_by"] == ("chunks" if fault == "no-usage" else "usage")
    if fault == "no-usage":
        assert "counted by chunks" in result.stdout


def test_goodput_and_token_thresholds_decide_the_exit_code(tmp_path: Path) -> None:
    """TTFT is 30 ms by construction: an objective of 20 ms is met by no request, 500 ms by all."""
    with StreamServer(ttft_ms=30, itl_ms=5) as server:
        extra = "goodput: {ttft_ms: 500, tpot_ms: 200}\nthresholds: [\"ttft_ms.p99 < 2000\", \"goodput_fraction >= 0.99\"]\n"
        good, _ = run(tmp_path, scenario(tmp_path, server.url, extra=extra))
        extra = "goodput: {ttft_ms: 20}\nthresholds: [\"goodput_fraction >= 0.5\"]\n"
        bad, _ = run(tmp_path, scenario(tmp_path, server.url, extra=extra), expected=1, name="bad")
    assert good["goodput"]["fraction"] == 1.0 and good["goodput"]["requests"] == good["requests"]
    assert all(t["passed"] for t in good["thresholds"])
    assert bad["goodput"]["fraction"] == 0.0 and not bad["thresholds"][0]["passed"]
    compared = harness("compare", str(tmp_path / "run"), str(tmp_path / "bad"), "--out", str(tmp_path / "cmp.html"))
    assert compared.returncode == 0, compared.stdout + compared.stderr
    page = (tmp_path / "cmp.html").read_text()
    assert 'alt="token Pareto" src="data:image/png' in page and "goodput (req/s meeting every SLO)" in page


def test_a_server_without_a_model_list_needs_target_model(tmp_path: Path) -> None:
    def handler(sock) -> None:  # type: ignore[no-untyped-def]
        while read_request(sock):
            sock.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    with RawServer(handler) as server:
        out = tmp_path / "run"
        result = harness("run", str(scenario(tmp_path, f"http://127.0.0.1:{server.port}")), "--out", str(out))
    assert result.returncode == 3 and "/v1/models answered HTTP 404; set target.model" in result.stderr
    assert "Traceback" not in result.stderr


def test_dataset_prompts_are_completed_into_requests(tmp_path: Path) -> None:
    """A dataset line may be a prompt string or an object with messages: the harness adds the model,
    stream and usage options; the server sees one request per line."""
    lines = ['"tell me a story"', json.dumps({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 3})]
    (tmp_path / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    path = tmp_path / "data.yaml"
    with StreamServer(ttft_ms=10, itl_ms=5) as server:
        path.write_text(f"name: data\ntarget: {{url: \"{server.url}\", api: openai-chat, model: m1, "
                        "dataset: {path: prompts.jsonl}}\nload: {model: open, start: 10, "
                        "stages: [{duration: 1s, target: 10}]}\n")
        summary, out = run(tmp_path, path)
    streams = read_streams(out)
    by_line = streams.groupby("line")["output_tokens"].first()
    assert summary["errors"] == 0 and summary["target"]["model"] == "m1"
    assert by_line[2] == 3 and by_line[1] == 16  # the line's own max_tokens; the server's default
    assert pd.Series(streams["input_tokens"]).groupby(streams["line"]).first().to_dict() == {1: 4, 2: 2}


def test_capacity_search_finds_the_highest_rate_meeting_a_goodput_slo(tmp_path: Path) -> None:
    """A server answering 4 streams at once, each taking 10 ms + 7 x 5 ms = 45 ms: it serves
    about 4 / 45 ms = 89 streams/s, and beyond that the queue (and TTFT) grows without bound.
    Capacity under `goodput_fraction >= 0.9` with TTFT <= 100 ms must land below that limit and
    well above the rate a queue-free server would need (the search's bracket says where)."""
    with StreamServer(ttft_ms=10, itl_ms=5, slots=4) as server:
        path = scenario(tmp_path, server.url, extra=(
            "goodput: {ttft_ms: 100}\ncapacity: {slo: [goodput_fraction >= 0.9], start: 20, max_rate: 400, "
            "precision: 0.25, probe: 1.5s, warmup: 0.5s}\n"))
        text = path.read_text().replace("load: {start: 4, stages: [{duration: 2s, target: 4}]}",
                                        "load: {model: open, stages: [{duration: 2s, target: 1}], max_in_flight: 256}")
        path.write_text(text)
        out = tmp_path / "capacity"
        result = harness("capacity", str(path), "--out", str(out), timeout=300)
    doc = json.loads((out / "capacity.json").read_text())
    assert result.returncode in (0, 1), result.stdout + result.stderr
    assert doc["capacity_rps"] is not None and 20 <= doc["capacity_rps"] < 4 / 0.045, doc["probes"]
    assert doc["first_failing_rps"] is not None and doc["first_failing_rps"] <= 4 / 0.045 * 1.6, doc["probes"]


def test_the_regression_gate_judges_token_figures(tmp_path: Path) -> None:
    """Baseline and run against the same server pass; a server whose first token comes 40 ms later
    is a TTFT regression the gate names, with a bootstrap interval over quarter-second windows."""
    def measured(name: str, ttft_ms: float) -> Path:
        with StreamServer(ttft_ms=ttft_ms, itl_ms=5) as server:
            run(tmp_path, scenario(tmp_path, server.url, seconds=2), name=name)
        return tmp_path / name

    base, same, slow = measured("base", 30), measured("same", 30), measured("slow", 70)
    checks = ["--check", "window=0.25", "--check", "p95_may_rise=null", "--check", "rps_may_fall=null",
              "--check", "itl_p50_may_rise=50%", "--check", "tokens_may_fall=null"]
    passed = harness("check", str(same), "--baseline", str(base), *checks, "--json", str(tmp_path / "same.json"))
    failed = harness("check", str(slow), "--baseline", str(base), *checks, "--json", str(tmp_path / "slow.json"))
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert failed.returncode == 1, failed.stdout + failed.stderr
    verdict = json.loads((tmp_path / "slow.json").read_text())
    ttft = next(row for row in verdict["metrics"] if row["metric"] == "ttft_p95")
    assert verdict["regressions"] == ["ttft_p95"] and ttft["method"].startswith("bootstrap")
    assert ttft["ci_low"] > 1.5  # 70 ms against 30 ms, give or take the machine


def test_each_stage_has_its_goodput_and_the_report_charts_it_against_the_offered_load(tmp_path: Path) -> None:
    """A server of 4 slots (about 89 streams/s) offered 20, then 120 streams/s: beyond its limit the
    queue grows, so the second stage's share meeting TTFT <= 100 ms falls below the first's."""
    with StreamServer(ttft_ms=10, itl_ms=5, slots=4) as server:
        path = tmp_path / "stages.yaml"
        path.write_text(f"name: stages\ntarget: {{url: \"{server.url}\", api: openai-chat, timeout: 5s, "
                        f"prompts: {{output_tokens: {{mean: {TOKENS}}}}}}}\n"
                        "load: {model: open, start: 20, max_in_flight: 256, stages: [{duration: 2s, target: 20}, "
                        "{duration: 0s, target: 120}, {duration: 2s, target: 120}]}\ngoodput: {ttft_ms: 100}\n")
        summary, out = run(tmp_path, path)
    first, last = summary["stages"][0], summary["stages"][-1]
    assert first["tokens"]["output_tokens"] == TOKENS * first["ok"]
    assert last["goodput"]["fraction"] < first["goodput"]["fraction"], summary["stages"]
    assert 'alt="goodput against offered load" src="data:image/png' in (out / "report.html").read_text()


def test_the_web_ui_streams_with_the_listed_model(tmp_path: Path) -> None:
    """`harness ui` on a generative scenario: the model comes from GET /v1/models, a swarm started
    through the UI's API streams, and the summary written on Ctrl-C has the token figures."""
    out = tmp_path / "ui-run"
    env = {**os.environ, "HARNESS_WEB_AUTH": "tester:s3cret"}
    login = ("tester", "s3cret")
    with StreamServer(ttft_ms=10, itl_ms=5) as server:
        path = scenario(tmp_path, server.url)
        with HarnessProcess("ui", str(path), "--out", str(out), env=env) as proc:
            found = wait_until(lambda: re.search(r"Locust web UI: (http://127\.0\.0\.1:\d+)", proc.stdout), 90,
                               "the UI address", proc=proc)
            ui = found.group(1)
            assert "model: fixed-timing" in proc.stdout
            swarm = {"user_count": 2, "spawn_rate": 10, "host": server.url}
            assert requests.post(ui + "/swarm", data=swarm, auth=login, timeout=5).json()["success"]
            wait_until(lambda: server.stats()["tokens"] >= 10 * TOKENS, 30, "tokens to stream", proc=proc, poll=0.3)
            proc.send_signal(signal.SIGINT)
            assert proc.wait(60) == 0, proc.output_tail()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"]["output_tokens"] >= 10 * TOKENS and summary["tokens"]["counted_by"] == "usage"
