"""`repeat: N` bookkeeping: the spread leaves partial repeats out, and repeats.json survives failures."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import EXIT_INTERRUPTED, TargetUnusable
from harness.results import layout
from harness.results.layout import expand_repeats
from harness.results.summary import RunResult, Summary
from harness.workflows import repeats


def result(rps: float, *, partial: bool = False, exit_code: int = 0, interrupted: bool = False) -> RunResult:
    summary = Summary(requests=100, rps=rps, latency_ms={"p50": 1.0, "p95": 2.0, "p99": 3.0}, error_rate=0.0,
                      valid=True, partial=partial, exit_code=exit_code, interrupted=interrupted)
    return RunResult(EXIT_INTERRUPTED if interrupted else exit_code, summary)


def test_spread_covers_complete_repeats_only() -> None:
    doc = repeats.spread([(Path("repeat-1"), result(100)), (Path("repeat-2"), result(120)),
                          (Path("repeat-3"), result(10, partial=True, exit_code=EXIT_INTERRUPTED, interrupted=True))],
                         planned=3)
    assert doc["completed"] == 2 and len(doc["repeats"]) == 3
    assert doc["spread"]["rps"]["min"] == 100 and doc["spread"]["rps"]["max"] == 120
    assert doc["spread"]["rps"]["cv"] == pytest.approx((200 ** 0.5) / 110)  # sample stdev / mean
    assert doc["exit_code"] == EXIT_INTERRUPTED
    assert "partial: not in the spread" in repeats.format_table(doc)


def test_worst_exit_code_wins() -> None:
    doc = repeats.spread([(Path("repeat-1"), result(100)), (Path("repeat-2"), result(90, exit_code=1))], planned=2)
    assert doc["exit_code"] == 1


def test_an_interrupted_repeat_stops_the_rest(tmp_path: Path) -> None:
    calls = []

    def execute(folder: Path) -> RunResult:
        calls.append(folder.name)
        return result(100, partial=True, interrupted=True) if len(calls) == 2 else result(100)

    doc = repeats.run_repeats(4, tmp_path, execute, lambda text: None)
    assert calls == ["repeat-1", "repeat-2"] and doc["exit_code"] == EXIT_INTERRUPTED


def test_repeats_json_is_written_when_a_repeat_fails(tmp_path: Path) -> None:
    def execute(folder: Path) -> RunResult:
        if folder.name == "repeat-2":
            raise TargetUnusable("the bundled server did not start")
        return result(100)

    with pytest.raises(TargetUnusable):
        repeats.run_repeats(3, tmp_path, execute, lambda text: None)
    doc = json.loads((tmp_path / layout.REPEATS).read_text())
    assert doc["completed"] == 1 and doc["repeats"][0]["folder"] == "repeat-1"


def test_expand_repeats_skips_incomplete_folders_and_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for k in (1, 2, 10):
        (tmp_path / f"repeat-{k}").mkdir()
    for k in (1, 10):
        (tmp_path / f"repeat-{k}" / "summary.json").write_text("{}")
    assert [p.name for p in expand_repeats([tmp_path])] == ["repeat-1", "repeat-10"]
    err = capsys.readouterr().err
    assert "skipping" in err and "repeat-2" in err
