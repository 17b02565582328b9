"""Capacity search: bracketing and bisecting on a fake target, invalid probes, and the real sleep model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.workflows.capacity import CAPACITY_FILE, search_capacity
from harness.scenario.schema import Scenario

SCENARIO = """
name: cap
target:
  server: {model: sleep, sleep_ms: 50, workers: 1, worker_class: gthread, threads: 8}
  payload: {inputs: [[1.0, 2.0, 3.0]]}
load:
  stages: [{duration: 1s, target: 1}]
capacity:
  slo: [p99_ms < 200, error_rate < 0.001]
  start: 100
  probe: 3s
  warmup: 1s
  precision: 3%
"""


class FakeTarget:
    """Passes the SLO up to `capacity` req/s; rates listed in `invalid` give invalid probes."""

    def __init__(self, capacity: float, invalid: tuple[float, ...] = (), flaky: float | None = None) -> None:
        self.capacity, self.invalid, self.flaky, self.rates = capacity, invalid, flaky, []

    def __call__(self, scenario: Scenario, path: Path, run_dir: Path) -> dict[str, Any]:
        rate = scenario.load.stages[-1].target
        assert scenario.load.model == "open" and scenario.thresholds == ["p99_ms < 200", "error_rate < 0.001"]
        self.rates.append(rate)
        passed = rate <= self.capacity and not (rate == self.flaky and self.rates.count(rate) > 1)
        p99 = 60.0 if passed else 900.0
        return {"valid": rate not in self.invalid, "passed": passed, "ok_rps": rate, "error_rate": 0.0,
                "latency_ms": {"p50": p99 / 3, "p95": p99 / 1.5, "p99": p99},
                "thresholds": [{"expression": "p99_ms < 200", "passed": passed}],
                "invalid_reasons": ["generator saturated"] if rate in self.invalid else []}


def write(tmp_path: Path, text: str = SCENARIO) -> Path:
    path = tmp_path / "cap.yaml"
    path.write_text(text)
    return path


def test_brackets_then_bisects_to_the_precision(tmp_path: Path) -> None:
    target = FakeTarget(173.0)
    result = search_capacity(write(tmp_path), [], tmp_path / "out", target, say=lambda _: None)
    assert target.rates[:3] == [100, 200, 150]
    low, high = result["capacity_rps"], result["first_failing_rps"]
    assert low <= 173 < high and (high - low) / low <= 0.03
    assert target.rates[-1] == low  # the last passing rate was confirmed by a repeat
    assert json.loads((tmp_path / "out" / CAPACITY_FILE).read_text())["capacity_rps"] == low
    page = (tmp_path / "out" / "capacity.html").read_text()
    assert "data:image/png;base64" in page and "last passing" in page


def test_halves_when_the_first_probe_fails(tmp_path: Path) -> None:
    result = search_capacity(write(tmp_path), [], tmp_path / "out", FakeTarget(30.0), say=lambda _: None)
    assert 30 * 0.97 <= result["capacity_rps"] <= 30


def test_an_invalid_probe_is_repeated_and_then_stops_the_search(tmp_path: Path) -> None:
    target = FakeTarget(1000.0, invalid=(400.0,))
    result = search_capacity(write(tmp_path), [], tmp_path / "out", target, say=lambda _: None)
    assert target.rates.count(400.0) == 2
    assert result["capacity_rps"] == 200 and result["first_failing_rps"] is None
    assert any("no evidence" in n for n in result["notes"])


def test_disagreeing_results_count_as_failing(tmp_path: Path) -> None:
    first = FakeTarget(173.0)
    search_capacity(write(tmp_path), [], tmp_path / "a", first, say=lambda _: None)
    confirmed = first.rates[-1]
    result = search_capacity(write(tmp_path), [], tmp_path / "b", FakeTarget(173.0, flaky=confirmed),
                             say=lambda _: None)
    assert result["capacity_rps"] < confirmed and any("disagree" in n for n in result["notes"])


@pytest.mark.e2e
def test_capacity_of_the_sleep_model_matches_the_theory(tmp_path: Path) -> None:
    """1 worker x 8 threads / 50 ms = 160 req/s; constant arrivals and a loose SLO land within 10%."""
    from tests.test_cli_e2e import assert_all_gone, harness

    result = harness("capacity", str(write(tmp_path)), "--out", str(tmp_path / "out"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "out" / CAPACITY_FILE).read_text())
    assert 160 * 0.9 <= found["capacity_rps"] <= 160 * 1.1, found
    assert (tmp_path / "out" / "capacity.html").is_file()
    for probe in found["probes"]:
        assert_all_gone(Path(probe["run_dir"]))


def test_a_scenario_without_capacity_block_is_refused(tmp_path: Path) -> None:
    from harness.errors import UserError

    with pytest.raises(UserError, match="no capacity: block"):
        search_capacity(write(tmp_path, SCENARIO.split("capacity:")[0]), [], tmp_path / "out", FakeTarget(1.0))
