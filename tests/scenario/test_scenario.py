"""Scenario parsing and validation: every mistake gives a located message and exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.errors import EXIT_BAD_INPUT, UserError
from harness.scenario.loading import load_scenario, validate
from harness.scenario.overrides import apply_override
from harness.scenario.thresholds import parse_threshold
from harness.scenario.units import parse_duration
from tests.support import SCENARIOS

SPIKE_EXAMPLE = """
name: spike
target:
  server: {model: linear, workers: 2, worker_class: sync, threads: 1, lock: none}
  endpoint: /predict
  payload: {inputs: [[1.0, 2.0, 3.0]]}
engine: threadpool
load:
  model: closed
  stages:
    - {duration: 10s, target: 4}
    - {duration: 0s, target: 48}
    - {duration: 10s, target: 48}
    - {duration: 0s, target: 4}
    - {duration: 10s, target: 4}
  warmup: 5s
thresholds:
  - p95_ms < 200
  - error_rate < 0.01
"""


def problems(doc: dict, base: Path = Path(".")) -> list[str]:
    with pytest.raises(UserError) as info:
        validate(doc, base_dir=base, source="s.yaml")
    assert info.value.exit_code == EXIT_BAD_INPUT
    return info.value.messages


def spike() -> dict:
    return yaml.safe_load(SPIKE_EXAMPLE)


def test_issue_example_loads_as_written() -> None:
    scenario = validate(spike(), base_dir=Path("."))
    assert scenario.duration == 30.0
    assert scenario.load.warmup == 5.0
    assert [s.target for s in scenario.load.stages] == [4, 48, 48, 4, 4]
    assert scenario.target.server.workers == 2
    assert [t.metric for t in scenario.parsed_thresholds] == ["p95_ms", "error_rate"]


SHIPPED = sorted(SCENARIOS.glob("*.yaml"))  # from this file's location: the same from any working directory


def test_the_shipped_scenarios_are_found() -> None:
    """An empty glob would parametrize nothing and the check below would vanish silently."""
    assert len(SHIPPED) >= 5 and (SCENARIOS / "smoke.yaml") in SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_scenarios_validate_and_say_what_they_answer(path: Path) -> None:
    scenario, _ = load_scenario(path)
    assert scenario.duration > 0
    first_line = path.read_text().splitlines()[0]
    assert first_line.startswith("# ") and len(first_line) > 20, "each scenario starts with its question"


def test_unknown_key_suggests_the_near_one() -> None:
    doc = spike()
    doc["load"]["stages"][2] = {"duraton": "10s", "target": 48}
    messages = problems(doc)
    assert any("load.stages[2].duraton: unknown key; did you mean 'duration'?" in m for m in messages)
    assert any("load.stages[2].duration: required key is missing" in m for m in messages)


def test_negative_duration_is_located() -> None:
    doc = spike()
    doc["load"]["stages"][2]["duration"] = "-5s"
    assert problems(doc) == ["s.yaml: load.stages[2].duration: duration must not be negative, got '-5s'"]


def test_wrong_types_each_reported_at_once() -> None:
    doc = spike()
    doc["load"]["stages"][0]["target"] = "many"
    doc["target"]["server"]["workers"] = "two"
    doc["load"]["model"] = "half-open"
    messages = problems(doc)
    assert len(messages) == 3
    joined = "\n".join(messages)
    assert "load.stages[0].target" in joined and "target.server.workers" in joined and "load.model" in joined


@pytest.mark.parametrize("expr,fragment", [
    ("p95 < 200", "unknown metric 'p95' (did you mean p95_ms?)"),
    ("p95_ms <", "not a threshold expression"),
    ("p95_ms ~ 3", "not a threshold expression"),
    ("latency < 3", "unknown metric"),
    ("soak_verdict < 3", "soak_verdict is a verdict: write `soak_verdict == WORD`"),
    ("soak_verdict != broken", "WORD one of stable, drifting, leaking"),
    ("p95_ms == 200", "== judges a verdict figure (soak_verdict)"),
    ("p95_ms < fast", "p95_ms is a number: 'fast' is not one"),
])
def test_bad_threshold_expression(expr: str, fragment: str) -> None:
    doc = spike()
    doc["thresholds"] = ["error_rate < 0.01", expr]
    messages = problems(doc)
    assert len(messages) == 1 and messages[0].startswith("s.yaml: thresholds[1]: ") and fragment in messages[0]


def test_unreadable_payload_file(tmp_path: Path) -> None:
    doc = spike()
    del doc["target"]["payload"]
    doc["target"]["payload_file"] = "missing.json"
    assert "target.payload_file: cannot read" in problems(doc, tmp_path)[0]
    (tmp_path / "broken.json").write_text("{not json")
    doc["target"]["payload_file"] = "broken.json"
    assert "is not valid JSON" in problems(doc, tmp_path)[0]
    (tmp_path / "ok.json").write_text('{"inputs": [[1, 2, 3]]}')
    doc["target"]["payload_file"] = "ok.json"
    validate(doc, base_dir=tmp_path)


def test_server_and_url_together_refused() -> None:
    doc = spike()
    doc["target"]["url"] = "http://127.0.0.1:9000"
    assert "either server" in problems(doc)[0]


def test_bad_url_and_inconsistent_server_settings() -> None:
    doc = spike()
    doc["target"]["server"] = {"worker_class": "sync", "threads": 4}
    assert "use worker_class gthread for threads > 1" in problems(doc)[0]
    doc = spike()
    del doc["target"]["server"]
    doc["target"]["url"] = "ftp://example"  # https is allowed (tests/run/test_tls_urls.py)
    assert "target.url" in problems(doc)[0]


def test_warmup_longer_than_run_and_zero_length_plan() -> None:
    doc = spike()
    doc["load"]["warmup"] = "1m"
    assert "leaves nothing to measure" in problems(doc)[0]
    doc = spike()
    doc["load"]["stages"] = [{"duration": "0s", "target": 3}]
    doc["load"]["warmup"] = 0
    assert "add up to 0 s" in problems(doc)[0]


def test_yaml_syntax_error_and_non_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("load:\n  stages: [\n")
    with pytest.raises(UserError) as info:
        load_scenario(bad)
    assert "not valid YAML (line" in info.value.messages[0]
    bad.write_text("- just\n- a list\n")
    with pytest.raises(UserError) as info:
        load_scenario(bad)
    assert "a scenario is a YAML mapping" in info.value.messages[0]
    with pytest.raises(UserError, match="no such scenario file"):
        load_scenario(tmp_path / "nope.yaml")


def test_overrides_set_nested_values() -> None:
    doc = spike()
    apply_override(doc, "load.stages[1].target=64")
    apply_override(doc, "target.server.workers=4")
    apply_override(doc, "generator.processes=2")
    scenario = validate(doc, base_dir=Path("."))
    assert scenario.load.stages[1].target == 64
    assert scenario.target.server.workers == 4
    assert scenario.generator.processes == 2
    with pytest.raises(UserError, match="has no item"):
        apply_override(doc, "load.stages[9].target=1")
    with pytest.raises(UserError, match="KEY.PATH=VALUE"):
        apply_override(doc, "load.stages")


@pytest.mark.parametrize("text,seconds", [("10s", 10), ("2m", 120), ("1m30s", 90), ("500ms", 0.5),
                                          ("1h", 3600), (3, 3), ("2.5", 2.5), ("0s", 0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1s", "ten", "5 parsecs", "1x", True, None, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_threshold_evaluation() -> None:
    summary = {"latency_ms": {"p95": 150.0}, "error_rate": 0.02, "rps": 1000.0}
    assert parse_threshold("p95_ms < 200").evaluate(summary)["passed"] is True
    assert parse_threshold("error_rate < 0.01").evaluate(summary)["passed"] is False
    assert parse_threshold("rps >= 1000").evaluate(summary)["passed"] is True
    assert parse_threshold("p99_ms < 1").evaluate(summary)["passed"] is False  # missing value fails


def test_verdict_and_trend_thresholds() -> None:
    leaking = {"soak": {"verdict": "leaking", "rss_mb_per_hour": 120.0}, "knee": {"knee_users": 8.0}}
    assert parse_threshold("soak_verdict != leaking").evaluate(leaking)["passed"] is False
    assert parse_threshold("soak_verdict == leaking").evaluate(leaking) == {
        "expression": "soak_verdict == leaking", "metric": "soak_verdict", "name": None, "observed": "leaking",
        "limit": "leaking", "op": "==", "passed": True}
    assert parse_threshold("rss_growth_mb_per_h < 50").evaluate(leaking)["passed"] is False
    assert parse_threshold("knee_users >= 8").evaluate(leaking)["passed"] is True
    # a run that was no soak (no soak block) cannot show it is not leaking
    assert parse_threshold("soak_verdict != leaking").evaluate({})["passed"] is False


def test_capacity_thresholds_judge_the_search_and_only_there() -> None:
    doc = spike()
    doc["capacity"] = {"slo": ["p99_ms < 100"]}
    doc["thresholds"] = ["capacity_rps >= 150"]
    assert validate(doc, base_dir=Path(".")).parsed_thresholds[0].metric == "capacity_rps"
    doc["thresholds"] = ["capacity_rps >= 150", "p95_ms < 20"]
    assert "what each probe must meet belongs in capacity.slo" in problems(doc)[0]
    del doc["capacity"]
    doc["thresholds"] = ["capacity_rps >= 150"]
    assert "judge a capacity search; this scenario has no capacity: block" in problems(doc)[0]


@pytest.mark.parametrize("payload,reason", [
    ({"inputs": [[float("nan"), 1.0]]}, "not JSON compliant"),  # would go out as null
    (float("inf"), "not JSON compliant"),
    ({1: [1.0, 2.0, 3.0]}, "Dict key must be str"),  # would crash the run at its first request
], ids=["nan", "infinity", "int-key"])
def test_a_payload_that_is_not_json_is_refused_with_its_location(payload: object, reason: str) -> None:
    doc = spike()
    doc["target"]["payload"] = payload
    messages = problems(doc)
    assert len(messages) == 1 and messages[0].startswith("s.yaml: target.payload: payload is not a JSON document")
    assert reason in messages[0]
