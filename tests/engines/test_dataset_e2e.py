"""Request data from a file, end to end in both engines, against a server that records what it got:
every arrival sends the dataset request its position says (sequential or seeded shuffle), every
row names its line, a structured line's endpoint, headers and name are sent, and request ids are
unique, sent and recorded."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.cli import assert_all_gone, assert_exit, harness
from tests.support.rawserver import OK_JSON, RawServer, read_request

pytestmark = pytest.mark.e2e


class Recorder:
    """Answers 200 `{}` and records each request's (path, body, headers) in order of arrival."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []
        self.lock = threading.Lock()

    def __call__(self, sock: socket.socket) -> None:
        while raw := read_request(sock):
            head, _, body = raw.partition(b"\r\n\r\n")
            first, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines)}
            path = first.split(" ")[1]
            if path != "/metrics":
                with self.lock:
                    self.requests.append((path, body, headers))
            sock.sendall(OK_JSON)


def run(tmp_path: Path, engine: str, dataset: str, lines: list[str], extra: str = "", processes: int = 1,
        rate: int = 40, seconds: int = 1, thresholds: str = "[]", code: int = 0,
        ) -> tuple[pd.DataFrame, Recorder, dict, str]:
    (tmp_path / "data.jsonl").write_text("".join(line + "\n" for line in lines))
    path = tmp_path / "s.yaml"
    path.write_text(f"name: data\nengine: {engine}\ngenerator: {{processes: {processes}}}\n"
                    f"target: {{endpoint: /x, dataset: {dataset}{extra}}}\n"
                    f"load: {{model: open, start: {rate}, stages: [{{duration: {seconds}s, target: {rate}}}]}}\n"
                    f"thresholds: {thresholds}\n")
    out = tmp_path / "run"
    recorder = Recorder()
    with RawServer(recorder) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out),
                         *(["--quiet"] if code == 0 else []))
    assert_exit(result, code, out)
    assert_all_gone(out)
    df = pd.concat(pd.read_csv(p, keep_default_na=False, na_values={"line": [""]}, dtype={"request_id": str})
                   for p in sorted(out.glob("samples-*.csv")))
    summary = json.loads((out / "summary.json").read_text())
    return df.sort_values("intended", ignore_index=True), recorder, summary, result.stdout


@pytest.mark.parametrize(("engine", "processes"), [("threadpool", 2), ("locust", 1)])
def test_sequential_order_wraps_around_and_every_row_names_its_line(tmp_path: Path, engine: str,
                                                                    processes: int) -> None:
    count, rate = 6, 40  # 40 arrivals over 6 lines: 6 full passes and a part
    bodies = [json.dumps({"inputs": [[i, i, i]]}) for i in range(count)]
    df, recorder, summary, _ = run(tmp_path, engine, "{path: data.jsonl}", bodies, processes=processes, rate=rate)
    assert len(df) == rate and (df["error"] == "").all()
    expected = [k % count + 1 for k in range(rate)]
    assert df["line"].astype(int).tolist() == expected  # arrival k sent line k mod N
    sent = sorted(body for _, body, _ in recorder.requests)
    assert sent == sorted(bodies[k % count].encode() for k in range(rate))  # exactly those bodies arrived
    assert summary["dataset"] == {"requests": count, "sent": rate, "passes": round(rate / count, 3),
                                  "wraps": 6}  # 6 passes and part of a 7th: 6 times back to line 1


@pytest.mark.parametrize("engine", ["threadpool", "locust"])
def test_shuffle_is_seeded_and_structured_lines_carry_endpoint_headers_and_name(tmp_path: Path,
                                                                                engine: str) -> None:
    count = 8
    lines = [json.dumps({"body": {"i": i}, "endpoint": f"/e{i % 2}", "headers": {"X-Line": str(i)},
                         "name": f"kind-{i % 2}"}) for i in range(count)]
    df, recorder, _, _ = run(tmp_path, engine, "{path: data.jsonl, order: shuffle, seed: 3}", lines,
                          extra=", request_id: {header: X-Request-ID}", rate=count * 4)
    order = np.random.default_rng(3).permutation(count)
    assert df["line"].astype(int).tolist() == [int(order[k % count]) + 1 for k in range(len(df))]
    assert df["name"].tolist() == [f"kind-{(line - 1) % 2}" for line in df["line"].astype(int)]
    by_line = {int(h["x-line"]): (path, body) for path, body, h in recorder.requests}
    assert by_line == {i: (f"/e{i % 2}", json.dumps({"i": i}, separators=(",", ":")).encode()) for i in range(count)}
    ids = df["request_id"].tolist()
    assert len(set(ids)) == len(ids) and all(i.startswith("run-0-") for i in ids)  # <run>-<gen>-<seq>
    assert sorted(h["x-request-id"] for _, _, h in recorder.requests) == sorted(ids)  # sent as recorded


def test_figures_per_name_and_a_threshold_on_one_name_fail_the_run(tmp_path: Path) -> None:
    lines = [json.dumps({"body": i, "name": "small" if i < 3 else "large"}) for i in range(4)]
    _, _, summary, console = run(tmp_path, "threadpool", "{path: data.jsonl}", lines, rate=40,
                        thresholds="['requests[small] < 25', 'requests[large] < 5', 'p95_ms[nobody] < 1']",
                        code=1)
    assert summary["by_name"]["small"]["requests"] == 30 and summary["by_name"]["large"]["requests"] == 10
    assert [t["passed"] for t in summary["thresholds"]] == [False, False, False]
    assert [t["observed"] for t in summary["thresholds"]] == [30, 10, None]
    assert "by name:" in console and "dataset     40 of 4 requests sent (10 passes, wrapped around 9 times)" in console
    assert "small" in console.split("by name:")[1] and "threshold   requests[small] < 25" in console


@pytest.mark.parametrize("engine", ["threadpool", "locust"])
def test_binary_v2_bodies_are_answered_by_the_bundled_server_which_logs_each_request_id(tmp_path: Path,
                                                                                        engine: str) -> None:
    """All-ones [2, 3] tensors in Triton's binary format: `linear` answers 0.3 per row only if it
    read the FP32 bytes right; its access log names every request id the rows recorded."""
    path = tmp_path / "binary.yaml"
    path.write_text(f"name: binary\nengine: {engine}\n"
                    "target:\n  server: {model: linear, workers: 1, access_log: true}\n"
                    "  endpoint: /v2/models/linear/infer\n"
                    "  generate: {shape: [2, 3], format: v2-binary, variants: 2, low: 1, high: 1}\n"
                    "  request_id: {header: X-Request-ID}\n"
                    "  expect: {json_path: 'outputs[0].data', equals: [0.3, 0.3]}\n"
                    "load: {start: 2, stages: [{duration: 1s, target: 2}]}\n")
    out = tmp_path / "run"
    result = harness("run", str(path), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"] > 10 and summary["errors"] == 0, summary["errors_by_kind"]
    df = pd.read_csv(out / "samples-0.csv", dtype={"request_id": str})
    ids = df["request_id"].tolist()
    assert len(set(ids)) == len(ids) and all(i.startswith("run-0-") for i in ids)
    logged = {line.rsplit('rid="', 1)[1].rstrip('"\n') for line in (out / "server.log").read_text().splitlines()
              if 'rid="run-' in line}
    assert set(ids) <= logged
    assert_all_gone(out)


@pytest.mark.parametrize(("engine", "processes"), [("threadpool", 2), ("locust", 1)])
def test_a_mix_sends_each_kind_by_its_seeded_weight(tmp_path: Path, engine: str, processes: int) -> None:
    """Three kinds, weights 1:2:1 (a payload, generated tensors, a dataset): which kind request k is
    follows the seeded schedule exactly, so the shares are reproducible, within statistical bounds
    of the weights, sent to each kind's endpoint, and broken down per name in summary.json."""
    from harness.engines.request_table import schedule

    (tmp_path / "c.jsonl").write_text('{"c": 1}\n{"c": 2}\n{"c": 3}\n')
    rate, seconds = 100, 2
    n = rate * seconds
    path = tmp_path / "mix.yaml"
    path.write_text(f"name: mix\nengine: {engine}\ngenerator: {{processes: {processes}}}\n"
                    "target:\n  endpoint: /default\n  mix_seed: 7\n  requests:\n"
                    "    - {name: a, endpoint: /a, payload: {a: 1}, weight: 1}\n"
                    "    - {name: b, endpoint: /b, generate: {shape: [1, 2], variants: 2}, weight: 2,"
                    " headers: {X-Kind: b}}\n"
                    "    - {name: c, dataset: {path: c.jsonl}, weight: 1}\n"
                    f"load: {{model: open, start: {rate}, stages: [{{duration: {seconds}s, target: {rate}}}]}}\n")
    out = tmp_path / "run"
    recorder = Recorder()
    with RawServer(recorder) as server:
        result = harness("run", str(path), "--url", f"http://127.0.0.1:{server.port}", "--out", str(out), "--quiet")
    assert_exit(result, 0, out)
    assert_all_gone(out)
    df = pd.concat(pd.read_csv(p, keep_default_na=False, na_values={"line": [""]})
                   for p in sorted(out.glob("samples-*.csv"))).sort_values("intended", ignore_index=True)
    assert len(df) == n
    kinds = schedule([1, 2, 1], 7)[:n]
    assert df["name"].tolist() == [["a", "b", "c"][k] for k in kinds]  # request k is the schedule's kind k
    counts = df["name"].value_counts()
    for name, weight in [("a", 0.25), ("b", 0.5), ("c", 0.25)]:  # within 4 standard deviations
        assert abs(counts[name] - n * weight) <= 4 * (n * weight * (1 - weight)) ** 0.5, counts
    assert df.loc[df["name"] == "c", "line"].notna().all() and df.loc[df["name"] != "c", "line"].isna().all()
    paths = pd.Series([p for p, _, _ in recorder.requests]).value_counts()
    assert paths.to_dict() == {"/a": counts["a"], "/b": counts["b"], "/default": counts["c"]}
    assert all(h.get("x-kind") == "b" for p, _, h in recorder.requests if p == "/b")
    assert {b for p, b, _ in recorder.requests if p == "/a"} == {b'{"a":1}'}
    summary = json.loads((out / "summary.json").read_text())
    assert {k: v["requests"] for k, v in summary["by_name"].items()} == counts.to_dict()
