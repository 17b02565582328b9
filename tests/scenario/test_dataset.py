"""`target.dataset` and `generate.format: v2-binary`: parsing lines, located errors, each generator's
share (bounded, and together exactly the dataset's order), and binary bodies decoded back."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engines.request_table import Table, table
from harness.errors import EXIT_BAD_INPUT, UserError
from harness.scenario import dataset, payload
from harness.scenario.dataset import MAX_PROBLEMS, Line, parse_line, read_share, share
from harness.scenario.loading import load_scenario
from tests.support.cli import harness


def write_scenario(folder: Path, lines: list[str] | bytes, spec: str = "{path: data.jsonl}") -> Path:
    data = lines if isinstance(lines, bytes) else "".join(f"{line}\n" for line in lines).encode()
    (folder / "data.jsonl").write_bytes(data)
    path = folder / "s.yaml"
    path.write_text(f"name: d\ntarget: {{url: 'http://127.0.0.1:9', dataset: {spec}}}\n"
                    "load: {stages: [{duration: 1s, target: 1}]}\n")
    return path


def test_plain_bodies_are_sent_as_written_and_objects_with_body_are_requests() -> None:
    assert parse_line(b' {"inputs": [[1, 2]]}\n', 3) == Line(3, b'{"inputs": [[1, 2]]}')
    line = parse_line(b'{"body": {"a": 1}, "endpoint": "/v2/x", "method": "POST", "headers": {"X-A": "b"},'
                      b' "name": "v2"}', 1)
    assert line == Line(1, b'{"a":1}', "/v2/x", "POST", {"X-A": "b"}, "v2")
    # an object with keys besides the five is a body that happens to have a "body" key
    assert parse_line(b'{"body": 1, "other": 2}', 1) == Line(1, b'{"body": 1, "other": 2}')
    assert parse_line(b'{"body": null, "method": "GET"}', 1) == Line(1, b"", None, "GET")


@pytest.mark.parametrize(("raw", "message"), [
    (b"{nope", "invalid JSON"),
    (b'{"body": 1, "endpoint": "x"}', "endpoint must be a path"),
    (b'{"body": 1, "method": "FETCH"}', "method must be one of"),
    (b'{"body": 1, "headers": [1]}', "headers must be an object"),
    (b'{"body": 1, "headers": {"X": 1}}', "headers: not a header"),
    (b'{"body": 1, "headers": {"bad name": "v"}}', "headers: not a header"),
    (b'{"body": 1, "name": "a,b"}', "name must be"),
])
def test_bad_lines_say_why(raw: bytes, message: str) -> None:
    result = parse_line(raw, 1)
    assert isinstance(result, str) and message in result


def test_every_bad_line_is_located_up_to_a_limit(tmp_path: Path) -> None:
    lines = ['{"ok": 1}'] * 16 + ["{bad"] + [""] + ['{"body": 1, "method": "X"}'] + ["[1"] * (MAX_PROBLEMS + 5)
    with pytest.raises(UserError) as err:
        load_scenario(write_scenario(tmp_path, lines))
    messages = err.value.messages
    assert err.value.exit_code == EXIT_BAD_INPUT
    data = tmp_path / "data.jsonl"
    assert f"target.dataset: {data.absolute()}:17: invalid JSON: " in messages[0], messages
    assert f"{data.absolute()}:19: method must be one of" in messages[1]
    assert len(messages) == MAX_PROBLEMS + 1 and messages[-1].endswith("... and 7 more bad lines")


def test_an_empty_or_missing_dataset_is_a_located_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no requests"):
        load_scenario(write_scenario(tmp_path, ["", "  "]))
    path = write_scenario(tmp_path, ["1"], spec="{path: missing.jsonl}")
    with pytest.raises(UserError, match="missing.jsonl: cannot read the dataset"):
        load_scenario(path)


def test_a_bad_dataset_stops_the_cli_with_exit_2_before_anything_runs(tmp_path: Path) -> None:
    result = harness("run", str(write_scenario(tmp_path, ["1", "{x"])), "--out", str(tmp_path / "run"))
    assert result.returncode == EXIT_BAD_INPUT
    assert "data.jsonl:2: invalid JSON" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "samples-0.csv").exists()


@pytest.mark.parametrize("order", ["sequential", "shuffle"])
@pytest.mark.parametrize(("count", "parts"), [(10, 1), (10, 3), (7, 2), (1, 4)])
def test_the_shares_together_are_the_order_each_generator_sends_its_own(tmp_path: Path, order: str,
                                                                        count: int, parts: int) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(f"[{i}]\n\n" for i in range(count)))  # blank lines skipped, still counted as lines
    assert dataset.check(path) == count
    expected = dataset.order_of(count, order, 5)
    shares = [read_share(path, count, order, 5, g, parts, lambda line: line) for g in range(parts)]
    assert sum(len(s) for s in shares) == count and max(len(s) for s in shares) <= -(-count // parts)
    # position p goes to generator p % parts as its (p // parts)-th item: arrival p sends request order[p]
    for p in range(count):
        line = shares[p % parts][p // parts]
        assert line.body == f"[{expected[p]}]".encode() and line.number == 2 * expected[p] + 1
    assert share(list(range(count)), 1 % parts, parts, order, 5) == [int(i) for i in expected[1 % parts::parts]]


def test_fixed_requests_are_picked_by_global_index_and_a_share_by_its_own_count(tmp_path: Path) -> None:
    fixed = table(["a", "b", "c"], None, 1, 2, lambda line: line)
    assert [fixed.items[fixed.slot(j)] for j in range(4)] == ["b", "a", "c", "b"]  # k = 1, 3, 5, 7 mod 3
    own = Table(["x", "y"], own_share=True)
    assert [own.items[own.slot(j)] for j in range(3)] == ["x", "y", "x"]


def test_binary_v2_bodies_decode_back_to_the_json_tensors() -> None:
    spec = {"shape": [2, 3], "seed": 4, "variants": 3, "input_name": "in"}
    from harness.scenario.schema import Generate, Scenario

    scenario = Scenario.model_validate({"target": {"endpoint": "/v2/models/linear/infer",
                                                   "generate": {**spec, "format": "v2-binary"}},
                                        "load": {"stages": [{"duration": 1, "target": 1}]}})
    headers = payload.body_headers(scenario)
    assert headers["Content-Type"] == "application/octet-stream"
    length = int(headers["Inference-Header-Content-Length"])
    binary = payload.bodies(scenario, Path("."))
    as_json = payload.generated_bodies(Generate.model_validate({**spec, "format": "v2"}))
    assert len(binary) == len(as_json) == 3
    for raw, text in zip(binary, as_json, strict=True):
        header = json.loads(raw[:length])
        tensor = json.loads(text)["inputs"][0]
        assert header == {"inputs": [{"name": "in", "shape": [2, 3], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 24}}]}
        assert len(raw) == length + 24
        values = np.frombuffer(raw[length:], dtype="<f4")
        assert values.tolist() == np.asarray(tensor["data"], dtype=np.float32).tolist()


FILES = itertools.count()
lines = st.lists(st.one_of(
    st.binary(max_size=30),
    st.text(max_size=30).map(str.encode),
    st.fixed_dictionaries({"body": st.one_of(st.none(), st.integers(), st.text(max_size=5))},
                          optional={"endpoint": st.one_of(st.text(max_size=6), st.integers()),
                                    "method": st.sampled_from(["GET", "POST", "get", 1]),
                                    "headers": st.one_of(st.dictionaries(st.text(max_size=4), st.text(max_size=4),
                                                                         max_size=2), st.lists(st.integers())),
                                    "name": st.text(max_size=8)}).map(lambda d: json.dumps(d).encode()),
), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw_lines=lines)
def test_arbitrary_lines_give_requests_or_located_errors_never_a_traceback(tmp_path: Path,
                                                                           raw_lines: list[bytes]) -> None:
    data = b"\n".join(line.replace(b"\n", b" ").replace(b"\r", b" ") for line in raw_lines) + b"\n"
    path = tmp_path / f"d{next(FILES)}.jsonl"  # a new file each time: check() remembers files it read
    path.write_bytes(data)
    try:
        count = dataset.check(path)
    except UserError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT
        assert all(m.startswith(f"{path}") for m in exc.messages)
        return
    got = read_share(path, count, "sequential", 0, 0, 1, lambda line: line)
    assert len(got) == count and all(isinstance(line.body, bytes) for line in got)


def test_a_threshold_may_name_one_kind_of_request() -> None:
    from harness.scenario.thresholds import parse_threshold

    threshold = parse_threshold("p95_ms[predict] < 50")
    assert (threshold.metric, threshold.name, threshold.limit) == ("p95_ms", "predict", 50.0)
    summary = {"latency_ms": {"p95": 10}, "by_name": {"predict": {"latency_ms": {"p95": 60}}}}
    assert threshold.evaluate(summary)["observed"] == 60 and not threshold.evaluate(summary)["passed"]
    assert parse_threshold("p95_ms < 50").evaluate(summary)["passed"]
    with pytest.raises(ValueError, match="not measured per request name"):
        parse_threshold("server_cpu_percent[predict] < 50")
    with pytest.raises(ValueError, match="not a threshold expression"):
        parse_threshold("p95_ms[a,b] < 50")


def test_a_mix_is_checked_like_a_target(tmp_path: Path) -> None:
    def scenario(requests: str) -> Path:
        path = tmp_path / "mix.yaml"
        path.write_text(f"name: m\ntarget: {{url: 'http://127.0.0.1:9', requests: {requests}}}\n"
                        "load: {stages: [{duration: 1s, target: 1}]}\n")
        return path

    with pytest.raises(UserError, match="every name once"):
        load_scenario(scenario("[{name: a}, {name: a}]"))
    with pytest.raises(UserError, match=r"target.requests\[0\]: give one of payload, payload_file, generate, dataset;"):
        load_scenario(scenario("[{name: a, payload: 1, payload_file: x.json}]"))
    (tmp_path / "bad.jsonl").write_text("{x\n")
    with pytest.raises(UserError) as err:
        load_scenario(scenario("[{name: a, dataset: {path: bad.jsonl}}, {name: b, payload_file: none.json}]"))
    assert any("target.requests[0].dataset: " in m and "bad.jsonl:1: invalid JSON" in m for m in err.value.messages)
    assert any("target.requests[1].payload_file: cannot read" in m for m in err.value.messages)
    with pytest.raises(UserError, match="give one of payload, payload_file, generate, dataset, requests"):
        load_scenario(write_scenario(tmp_path, ["1"], spec="{path: data.jsonl}, requests: [{name: a}]"))


def test_the_mix_schedule_is_seeded_and_follows_the_weights() -> None:
    from harness.engines.request_table import schedule

    a, b = schedule([1, 3], 0), schedule([1, 3], 0)
    assert (a == b).all() and not (a == schedule([1, 3], 1)).all()
    assert abs(float((a == 1).mean()) - 0.75) < 0.01  # 65,536 draws: within ~6 standard deviations
