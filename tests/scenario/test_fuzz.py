"""Property-based tests: arbitrary scenario documents and arbitrary server bytes never crash us."""
from __future__ import annotations

import re
import socket
import threading

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.engines import http_client as hc
from harness.engines.http_client import request_bytes
from harness.errors import EXIT_BAD_INPUT, UserError
from harness.results import samples
from harness.scenario.loading import validate
from harness.scenario.schema import Scenario
from tests.support import SCENARIOS
from tests.support.rawserver import read_request

SHIPPED = [yaml.safe_load(p.read_text()) for p in sorted(SCENARIOS.glob("*.yaml"))]

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["10s", "-1s", "1m", "abc", "p95_ms < 1", "0s"]))
documents = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4),
    st.dictionaries(st.sampled_from(["name", "target", "load", "stages", "duration", "target", "model",
                                     "server", "url", "workers", "thresholds", "warmup", "payload",
                                     "generate", "shape", "engine", "locust", "x", "arrival"]) | st.text(max_size=6),
                    children, max_size=5)), max_leaves=25)


def paths(doc: object, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, prefix + (i,))
    return out


LOCATED = re.compile(r"^fuzz\.yaml: .*: \S", re.S)  # "fuzz.yaml: load.stages[0].duration: what is wrong"


def check_clean(doc: object) -> str:
    """Either every problem is reported as a located message (exit 2), or the document is accepted
    and is a real scenario: its validated form validates again to the same scenario."""
    if not isinstance(doc, dict):
        return "not a mapping"  # load_scenario refuses these before validate (test_scenario.py)
    try:
        scenario = validate(doc, base_dir=SCENARIOS, source="fuzz.yaml")
    except UserError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT
        assert exc.messages, doc
        for message in exc.messages:
            assert isinstance(message, str) and LOCATED.match(message), (message, doc)
        return "refused"
    assert isinstance(scenario, Scenario) and scenario.duration > 0, doc
    again = validate(scenario.model_dump(mode="json"), base_dir=SCENARIOS, source="fuzz.yaml")
    assert again == scenario, doc
    return "accepted"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_arbitrary_documents_give_located_errors_or_a_valid_scenario(doc: object) -> None:
    check_clean(doc)


def test_the_checks_see_both_outcomes() -> None:
    """check_clean itself can tell garbage from a scenario (so the properties above can fail)."""
    assert check_clean({"load": {"stages": [{"duration": "1s", "target": 1}]}}) == "accepted"
    assert check_clean({"load": {"stages": [{"duraton": "1s", "target": 1}]}, "x": 1}) == "refused"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(range(len(SHIPPED))), st.data())
def test_mutated_shipped_scenarios_give_located_errors_or_a_valid_scenario(index: int, data: st.DataObject) -> None:
    import copy

    doc = copy.deepcopy(SHIPPED[index])
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(paths(doc)[1:]))
        node = doc
        for key in where[:-1]:
            node = node[key]
        if data.draw(st.booleans()):
            node[where[-1]] = data.draw(scalars)
        elif isinstance(node, dict):
            del node[where[-1]]
    check_clean(doc)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_client_classifies_arbitrary_response_bytes(reply: bytes, close_after: bool) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            read_request(conn)
            conn.sendall(reply)
            if close_after:
                conn.shutdown(socket.SHUT_WR)
            else:
                conn.settimeout(1.0)
                try:
                    conn.recv(1)
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        response = hc.Connection("127.0.0.1", port).request(
            request_bytes("POST", "127.0.0.1", port, "/predict", b"{}", {}), 0.2)
        assert 100 <= response.status <= 599 and response.body_bytes >= 0
    except hc.RequestFailed as exc:
        assert exc.kind in {samples.TIMEOUT, samples.CONNECT, samples.RESET, samples.CLOSED, samples.PROTOCOL, samples.TOO_LARGE}
    finally:
        thread.join(timeout=3)
        listener.close()
