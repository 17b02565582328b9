"""`load.trace`: reading a trace (jsonl or csv), its located errors, and the plan it makes."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.analysis.windows import offered_load
from harness.errors import EXIT_BAD_INPUT, UserError
from harness.scenario.loading import load_scenario
from harness.scenario.plan import LoadPlan, plan_from_scenario
from harness.scenario.trace import MAX_PROBLEMS, read_trace


def write_scenario(folder: Path, trace: str, extra: str = "") -> Path:
    path = folder / "replay.yaml"
    path.write_text(f"name: replay\ntarget: {{url: 'http://127.0.0.1:9'}}\nload: {{trace: {trace}{extra}}}\n")
    return path


def test_csv_offsets_are_replayed_at_their_times_scaled_by_speed(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("user,timestamp\na,0\nb,0.5\nc,0.75\nd,2\n")
    scenario, _ = load_scenario(write_scenario(tmp_path, "{path: t.csv, speed: 2}"))
    plan = plan_from_scenario(scenario)
    assert plan.model == "open" and plan.arrival == "trace"
    assert list(plan.arrivals()) == [0.0, 0.25, 0.375, 1.0]
    assert plan.notes == ()
    # the replay lasts up to the last arrival plus the mean gap, so every arrival is inside it
    assert plan.duration == pytest.approx(1.0 + 1.0 / 3)
    assert plan.describe_stage(0).startswith("trace replay: 4 arrivals")


def test_absolute_millisecond_timestamps_start_at_the_earliest(tmp_path: Path) -> None:
    lines = [{"timestamp": 1_700_000_000_000 + ms, "prompt": "x"} for ms in (0, 10, 30, 60)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in lines) + "\n")
    trace = read_trace(tmp_path / "t.jsonl", unit="ms")
    assert trace.times.tolist() == pytest.approx([0.0, 0.01, 0.03, 0.06])
    assert trace.lines.tolist() == [1, 2, 3, 4]


def test_out_of_order_lines_are_sorted_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n3\n1\n2\n0\n")
    trace = read_trace(tmp_path / "t.csv")
    assert trace.times.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert trace.lines.tolist() == [5, 3, 4, 2]  # each arrival's file line, in replay order
    assert len(trace.notes) == 1 and "2 line(s) earlier than the line before" in trace.notes[0]
    scenario, _ = load_scenario(write_scenario(tmp_path, "{path: t.csv}"))
    assert plan_from_scenario(scenario).notes == trace.notes


def test_arrivals_split_across_generators_by_global_index(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n" + "".join(f"{i / 10}\n" for i in range(11)))
    plan = plan_from_scenario(load_scenario(write_scenario(tmp_path, "{path: t.csv}"))[0])
    whole = list(plan.arrivals())
    for parts in (1, 2, 3):
        for part in range(parts):
            mine = list(plan.arrivals(part, parts))
            assert mine == whole[part::parts]
            assert plan.planned_count(part, parts) == len(mine)
    assert plan.expected_requests() == 11 and plan.expected_requests(0.25) == 3


def test_the_offered_rate_is_the_traces_own_per_window() -> None:
    times = np.array([0.0, 0.1, 0.2, 0.3, 1.5, 2.2, 2.4, 2.6, 2.8])
    plan = LoadPlan.from_times(times, 3.0)
    assert offered_load(plan, np.array([0.0, 1.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0]


def test_the_plan_survives_the_locust_plan_file() -> None:
    plan = LoadPlan.from_times(np.array([0.0, 0.5, 0.7]), 1.05, warmup=0.2)
    again = LoadPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert list(again.arrivals()) == [0.0, 0.5, 0.7]
    assert again.duration == plan.duration and again.warmup == 0.2 and again.arrival == "trace"


def test_bad_lines_are_located_errors_every_one_listed(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp,x\n0,a\nabc,b\n,c\n1e999,d\n2,e\n")
    with pytest.raises(UserError) as err:
        load_scenario(write_scenario(tmp_path, "{path: t.csv}"))
    assert err.value.exit_code == EXIT_BAD_INPUT
    text = "\n".join(err.value.messages)
    assert "t.csv:3: timestamp is not a number: 'abc'" in text
    assert "t.csv:4: missing timestamp" in text
    assert "t.csv:5: timestamp is not a finite number" in text
    assert len(err.value.messages) == 3

    (tmp_path / "t.jsonl").write_text('{"timestamp": 0}\n{"t": 1}\nnot json\n[1]\n{"timestamp": true}\n')
    with pytest.raises(UserError) as err:
        read_trace(tmp_path / "t.jsonl")
    located = [m.split(": ", 1)[0].rsplit(":", 1)[1] for m in err.value.messages]
    assert located == ["2", "3", "4", "5"], err.value.messages


def test_many_bad_lines_are_listed_up_to_a_limit(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n" + "x\n" * 100)
    with pytest.raises(UserError) as err:
        read_trace(tmp_path / "t.csv")
    assert len(err.value.messages) == MAX_PROBLEMS + 1
    assert err.value.messages[-1].endswith(f"... and {100 - MAX_PROBLEMS} more bad lines")


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("t.txt", "0\n", "a trace is a .jsonl or .csv file"),
    ("t.csv", "", "empty file"),
    ("t.csv", "time\n1\n", "t.csv:1: no 'timestamp' column (load.trace.time_field); the header has 'time'"),
    ("t.jsonl", "\n\n", "no arrivals"),
    ("t.jsonl", b'{"timestamp": 1}\n\xff\n', "invalid JSON"),
    ("t.csv", b"timestamp\n1\n\xff\n", "not UTF-8 text"),
])
def test_unusable_files_are_refused_with_their_path(tmp_path: Path, name: str, text: str | bytes,
                                                     expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(UserError, match=re.escape(expected)):
        read_trace(path)


def test_scenario_keys_are_checked(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n0\n1\n")
    cases = {", stages: [{duration: 1s, target: 1}]": "give stages or a trace, not both",
             ", model: closed": "a trace drives the open model",
             ", arrival: poisson": "arrival does not apply to a trace",
             ", warmup: 5s": "leaves nothing to measure in the trace's 2 s"}
    for extra, expected in cases.items():
        with pytest.raises(UserError, match=re.escape(expected)):
            load_scenario(write_scenario(tmp_path, "{path: t.csv}", extra))
    with pytest.raises(UserError, match=r"load.trace: .*missing\.csv: cannot read the trace"):
        load_scenario(write_scenario(tmp_path, "{path: missing.csv}"))
    with pytest.raises(UserError, match=r"load.trace.speed"):
        load_scenario(write_scenario(tmp_path, "{path: t.csv, speed: 0}"))


def test_the_run_folder_names_the_trace_by_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("timestamp\n0\n1\n")
    scenario, _ = load_scenario(write_scenario(tmp_path, "{path: t.csv}"))
    assert scenario.load.trace is not None and Path(scenario.load.trace.path) == (tmp_path / "t.csv").absolute()


LOCATED = re.compile(r"^.+\.(jsonl|csv)(:\d+)?: \S")
cells = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers().map(str),
                  st.text(max_size=8), st.sampled_from(["", " ", "1e999", "nan", "-0", "0x10", "1_000"]))
jsonl_values = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                         st.lists(st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(cells, st.text(max_size=20), st.binary(max_size=12).map(lambda b: b.decode("latin-1"))),
                      max_size=8))
def test_any_csv_reads_or_is_refused_with_a_located_message(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.csv"
    path.write_bytes(("timestamp,body\n" + "\n".join(lines)).encode("utf-8", "surrogatepass"))
    _reads_or_located(path)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(
    st.dictionaries(st.sampled_from(["timestamp", "t", "body"]), jsonl_values, max_size=3).map(json.dumps),
    st.text(max_size=16), st.binary(max_size=12).map(lambda b: b.decode("latin-1"))), max_size=8))
def test_any_jsonl_reads_or_is_refused_with_a_located_message(tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    _reads_or_located(path)


def _reads_or_located(path: Path) -> None:
    for body_field in (None, "body"):
        _one_read_or_located(path, body_field)


def _one_read_or_located(path: Path, body_field: str | None) -> None:
    try:
        trace = read_trace(path, body_field=body_field)
    except UserError as exc:
        assert exc.exit_code == EXIT_BAD_INPUT
        assert exc.messages and all(LOCATED.match(m) for m in exc.messages), exc.messages
        return
    assert (trace.bodies is None) == (body_field is None)
    assert trace.bodies is None or len(trace.bodies) == len(trace.times)
    # accepted: a real replay, sorted from 0, finite, one file line per arrival
    assert len(trace.times) >= 1 and trace.times[0] == 0.0
    assert np.isfinite(trace.times).all() and (np.diff(trace.times) >= 0).all()
    assert len(trace.lines) == len(trace.times) and trace.duration > trace.times[-1]


def test_bodies_follow_their_arrivals_in_replay_order(tmp_path: Path) -> None:
    lines = [{"t": 2, "req": {"inputs": [[2.0]]}}, {"t": 0, "req": {"inputs": [[0.0]]}}, {"t": 1, "req": "x"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in lines))
    trace = read_trace(tmp_path / "t.jsonl", time_field="t", body_field="req")
    assert trace.bodies == (b'{"inputs":[[0.0]]}', b'"x"', b'{"inputs":[[2.0]]}')
    (tmp_path / "t.csv").write_text('t,req\n1,"{""a"": 1}"\n0,[1]\n')
    assert read_trace(tmp_path / "t.csv", time_field="t", body_field="req").bodies == (b"[1]", b'{"a":1}')
    assert read_trace(tmp_path / "t.csv", time_field="t").bodies is None


def test_bad_bodies_are_located_errors(tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"t": 0, "req": 1}\n{"t": 1}\n')
    with pytest.raises(UserError, match=re.escape("t.jsonl:2: no 'req' field (load.trace.body_field)")):
        read_trace(tmp_path / "t.jsonl", time_field="t", body_field="req")
    (tmp_path / "t.csv").write_text("t,req\n0,{nope\n")
    with pytest.raises(UserError, match=re.escape("t.csv:2: req is not JSON")):
        read_trace(tmp_path / "t.csv", time_field="t", body_field="req")
    (tmp_path / "u.csv").write_text("t\n0\n")
    with pytest.raises(UserError, match=re.escape("u.csv:1: no 'req' column (load.trace.body_field)")):
        read_trace(tmp_path / "u.csv", time_field="t", body_field="req")
    (tmp_path / "ok.csv").write_text("timestamp,req\n0,1\n")
    for extra, expected in {"\ntarget: {payload: {a: 1}}": "drop target.payload",
                            "\ntarget: {method: GET}": "a GET request sends no body"}.items():
        path = tmp_path / "replay.yaml"
        path.write_text("name: replay\nload: {trace: {path: ok.csv, body_field: req}}" + extra + "\n")
        with pytest.raises(UserError, match=re.escape(expected)):
            load_scenario(path)
