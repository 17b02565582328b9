"""Response checks (`target.expect`): the rules, their defaults, the sampled fraction, the client
keeping a checked body, and the `checks-<gen>.csv` side file with the row each reason belongs to."""
from __future__ import annotations

import socket
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.engines.http_client import Connection
from harness.errors import UserError
from harness.results import layout
from harness.results.checks import read_checks
from harness.results.samples import CHECK, HTTP_ERROR, OK, Sample, SampleWriter, read_samples
from harness.scenario.expect import Checker, parse_path, resolve
from harness.scenario.loading import validate
from harness.scenario.schema import Scenario
from tests.support.rawserver import RawServer, read_request
from tests.support.server_fixtures import make_client

LOAD = {"stages": [{"duration": 1, "target": 1}]}


def scenario(**target: object) -> Scenario:
    return Scenario.model_validate({"target": target, "load": LOAD})


def test_paths_parse_into_keys_and_indexes() -> None:
    assert parse_path("predictions") == ("predictions",)
    assert parse_path("outputs[0].data") == ("outputs", 0, "data")
    assert parse_path("$.a[1][2].b-c") == ("a", 1, 2, "b-c")
    assert parse_path('x["odd key"]') == ("x", "odd key")
    for bad in ("", "a..b", "a[x]", "a[0", "[-1]", "a b"):
        with pytest.raises(ValueError):
            parse_path(bad)
    with pytest.raises(UserError, match=r"target.expect.json_path: .*cannot read it"):
        validate({"target": {"expect": {"json_path": "a[x]"}}, "load": LOAD}, base_dir=Path("."))
    with pytest.raises(UserError, match=r"target.expect.equals: .*not a JSON value"):
        validate({"target": {"expect": {"equals": {1: 2}}}, "load": LOAD}, base_dir=Path("."))


@pytest.mark.parametrize(("body", "expected"), [
    (b'{"outputs": [{"data": [1, 2]}]}', None),
    (b'{"outputs": [{"data": [1.0, 2.0]}]}', None),  # JSON numbers: 1 == 1.0
    (b'{"outputs": [{"data": [1, 3]}]}', "outputs[0].data is [1,3], expected [1,2]"),
    (b'{"outputs": [{"data": [true, 2]}]}', "outputs[0].data is [true,2], expected [1,2]"),
    (b'{"outputs": []}', "outputs has 0 items (no [0])"),
    (b'{"outputs": {}}', "outputs is not a list (no [0])"),
    (b'{"outputs": [7]}', "outputs[0] is not an object (no 'data')"),
    (b'{"error": "model not loaded"}', "no 'outputs' in body"),
    (b"<html>busy</html>", "body is not JSON"),
])
def test_a_json_path_and_value_are_checked(body: bytes, expected: str | None) -> None:
    checker = Checker({"status": [200], "json_path": "outputs[0].data", "equals": [1, 2], "sample": 1.0})
    error, reason = checker.judge(200, body)
    if expected is None:
        assert (error, reason) == (OK, None)
    else:
        assert error == CHECK and reason is not None and reason.startswith(expected), reason


def test_status_contains_and_equals_without_a_path() -> None:
    checker = Checker({"status": [200, 201], "contains": "ok", "sample": 1.0})
    assert checker.judge(201, b'{"status": "ok"}') == (OK, None)
    assert checker.judge(200, b"fail") == (CHECK, "body does not contain 'ok'")
    assert checker.judge(204, None) == (CHECK, "status 204, expected 200 or 201")
    assert checker.judge(503, b"") == (HTTP_ERROR, None)  # an error status stays of kind http
    assert Checker({"status": [404], "sample": 1.0}).judge(404, None) == (OK, None)  # expected, so a success
    whole = Checker({"status": [200], "equals": {"ok": True}, "sample": 1.0})
    assert whole.judge(200, b'{"ok": true}') == (OK, None)
    assert whole.judge(200, b"{}") == (CHECK, 'body is {}, expected {"ok":true}')
    assert whole.judge(200, None) == (OK, None)  # not sampled: only the status is judged


def test_reasons_are_one_short_line() -> None:
    checker = Checker({"status": [200], "contains": "x" * 500, "sample": 1.0})
    _, reason = checker.judge(200, b"\n".join([b"y"] * 10))
    assert reason is not None and "\n" not in reason and len(reason) <= 160


def test_sample_checks_a_seeded_fraction_of_bodies() -> None:
    def picks(seed: int, gen: int) -> list[bool]:
        checker = Checker({"status": [200], "json_path": "a", "sample": 0.25, "seed": seed}, gen)
        return [checker.wants_body() for _ in range(4000)]
    first = picks(1, 0)
    assert first == picks(1, 0)  # reproducible
    assert first != picks(1, 1) and first != picks(2, 0)  # but not the same for every generator
    assert 0.2 < sum(first) / len(first) < 0.3  # binomial(4000, 0.25): sd 0.007, this is 7 sd wide
    assert not any(Checker({"status": [200], "json_path": "a", "sample": 0.0}).wants_body() for _ in range(100))
    assert not Checker({"status": [200], "sample": 1.0}).wants_body()  # status only: no body kept


def test_defaults_for_the_bundled_servers_endpoints() -> None:
    assert resolve(scenario()) == {"status": [200], "sample": 1.0, "seed": 0, "json_path": "predictions"}
    assert resolve(scenario(endpoint="/v2/models/linear/infer"))["json_path"] == "outputs"  # type: ignore[index]
    assert resolve(scenario(endpoint="/healthz")) is None
    assert resolve(scenario(url="http://127.0.0.1:8000")) is None  # another server: as before, no checks
    given = resolve(scenario(url="http://127.0.0.1:8000", expect={"sample": 0.5}))
    assert given == {"status": [200], "sample": 0.5, "seed": 0, "json_path": "predictions"}
    assert resolve(scenario(expect={"contains": "x"})) == {"status": [200], "sample": 1.0, "seed": 0,
                                                           "contains": "x"}
    assert resolve(scenario(endpoint="/healthz", expect={})) == {"status": [200], "sample": 1.0, "seed": 0}
    # a dataset's lines may each name another endpoint: no default from target.endpoint
    with_dataset = Scenario.model_validate({"target": {"dataset": {"path": "d.jsonl"}}, "load": LOAD})
    assert resolve(with_dataset) is None
    assert resolve(with_dataset.model_copy(update={"target": with_dataset.target.model_copy(
        update={"expect": scenario(expect={}).target.expect})})) == {"status": [200], "sample": 1.0, "seed": 0}


def test_a_run_folders_scenario_checks_the_same_way_again() -> None:
    """scenario.yaml writes every key out (nulls too): re-read, it must resolve to the same checks."""
    for target in ({}, {"expect": {}}, {"expect": {"contains": "ok", "sample": 0.5}},
                   {"url": "http://127.0.0.1:8000", "expect": {"json_path": "a[0]", "equals": [1]}}):
        original = scenario(**target)
        again = Scenario.model_validate(original.model_dump(mode="json"))
        assert resolve(again) == resolve(original), target


def test_the_bundled_servers_answers_pass_their_defaults_and_its_errors_do_not() -> None:
    client = make_client(model="linear")
    predict = Checker(resolve(scenario()))  # type: ignore[arg-type]
    v2 = Checker(resolve(scenario(endpoint="/v2/models/linear/infer")))  # type: ignore[arg-type]
    ok = client.post("/predict", json={"inputs": [[1.0, 2.0, 3.0]]})
    assert predict.judge(ok.status_code, ok.data) == (OK, None)
    tensor = {"inputs": [{"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    answer = client.post("/v2/models/linear/infer", json=tensor)
    assert v2.judge(answer.status_code, answer.data) == (OK, None)
    assert v2.judge(200, ok.data)[0] == CHECK  # a /predict answer is not a v2 one
    assert predict.judge(200, answer.data)[0] == CHECK


def _server(body: bytes, framing: str) -> RawServer:
    def handle(sock: socket.socket) -> None:
        while read_request(sock):
            if framing == "length":
                sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif framing == "chunked":
                half = len(body) // 2
                chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:half], body[half:]) if p)
                sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")
            else:
                sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
                return
    return RawServer(handle)


@pytest.mark.parametrize("framing", ["length", "chunked", "close"])
def test_the_client_keeps_a_body_only_when_asked(framing: str) -> None:
    body = b'{"predictions": [' + b"1.5, " * 40_000 + b"2]}"  # larger than one receive buffer
    with _server(body, framing) as server:
        conn = Connection("127.0.0.1", server.port)
        try:
            raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
            kept = conn.request(raw, 5.0, keep_body=True)
            counted = conn.request(raw, 5.0)
        finally:
            conn.close()
    assert kept.body == body and kept.body_bytes == len(body)
    assert counted.body is None and counted.body_bytes == len(body)


def test_each_reason_names_its_row_in_the_sample_file(tmp_path: Path) -> None:
    writer = SampleWriter(layout.samples_file(tmp_path, 3), flush_interval=60)
    for i in range(600):  # more than one write() chunk
        row = Sample(i / 100, i / 100, i / 100 + 0.01, 200, CHECK if i % 7 == 0 else OK, 2, 0, 3)
        if i % 7 == 0:
            writer.reasons[id(row)] = f"no 'predictions' in body, said \"x\", row {i}"
        writer.append(row)
    writer.close()
    checks = read_checks(tmp_path)
    samples = read_samples(tmp_path)
    assert len(checks) == len(range(0, 600, 7)) and (checks["gen"] == 3).all()
    for row, reason in zip(checks["row"], checks["reason"]):
        assert samples.loc[row - 1, "error"] == CHECK  # row: 1-based data row of samples-3.csv
        assert reason.endswith(f"row {round(samples.loc[row - 1, 'intended'] * 100)}")
    assert (tmp_path / "checks-3.csv").read_text().splitlines()[0] == "row,reason"


def test_no_failed_check_no_side_file(tmp_path: Path) -> None:
    writer = SampleWriter(layout.samples_file(tmp_path, 0))
    writer.append(Sample(0.0, 0.0, 0.1, 200, OK, 2, 0, 0))
    writer.close()
    assert layout.checks_files(tmp_path) == [] and read_checks(tmp_path).empty


@settings(max_examples=300, deadline=None)
@given(path=st.text(max_size=16), body=st.binary(max_size=64) | st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "0"]), kids, max_size=3),
    max_leaves=8).map(lambda doc: orjson.dumps(doc)))
def test_any_path_and_any_body_give_a_verdict_never_a_traceback(path: str, body: bytes) -> None:
    try:
        steps = parse_path(path)
    except ValueError:
        return
    assert steps and all(isinstance(s, (str, int)) for s in steps)
    checker = Checker({"status": [200], "json_path": path, "equals": 1, "sample": 1.0})
    error, reason = checker.judge(200, body)
    assert (error, reason) == (OK, None) or (error == CHECK and reason and len(reason) <= 160)
