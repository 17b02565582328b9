"""The tie rule of sweeps: intervals (t over repeats, bootstrap over windows, capacity brackets) and
when a winner may be named."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from harness.analysis import ranking
from harness.analysis.ranking import Interval


def row(label: str, figure: float | None, interval: tuple[float, float] | None, usable: bool = True) -> dict[str, Any]:
    return {"label": label, "figure": figure, "usable": usable,
            "interval": None if interval is None else Interval(*interval, "test")}


def test_t_interval_of_the_mean() -> None:
    interval = ranking.t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, t(2) = 4.303
    assert interval is not None
    assert interval.low == pytest.approx(2 - 4.303 / math.sqrt(3)) and interval.high == pytest.approx(2 + 4.303 / math.sqrt(3))
    assert "3 repeats" in interval.method
    many = ranking.t_interval([10.0, 12.0] * 40)  # 79 degrees of freedom: the normal's 1.96
    assert many is not None and many.high - 11 == pytest.approx(1.96 * np.std([10.0, 12.0] * 40, ddof=1) / math.sqrt(80))
    assert ranking.t_interval([5.0]) is None


def test_bootstrap_interval_covers_the_statistic_and_narrows_with_more_windows() -> None:
    rng = np.random.default_rng(1)
    short, long = rng.normal(100, 5, 10), rng.normal(100, 5, 400)
    a, b = ranking.bootstrap_interval(short, "mean"), ranking.bootstrap_interval(long, "median")
    assert a is not None and b is not None
    assert a.low < short.mean() < a.high and b.low < np.median(long) < b.high
    assert b.high - b.low < a.high - a.low
    assert ranking.bootstrap_interval(short[:4], "mean") is None


def test_capacity_bracket() -> None:
    assert ranking.bracket_interval(150.0, 160.0) == Interval(150.0, 160.0, ranking.bracket_interval(1, 2).method)
    assert ranking.bracket_interval(150.0, None).high == math.inf  # type: ignore[union-attr]
    assert ranking.bracket_interval(None, 50.0) is None


def test_a_winner_needs_its_interval_clear_of_the_runner_up() -> None:
    clear = ranking.decide([row("a", 110, (105, 115)), row("b", 100, (95, 104)), row("c", 90, (85, 95))], "ok_rps")
    assert clear["winner"] == "a" and clear["tied"] == []
    assert "1.10x the runner-up b" in clear["text"] and "do not overlap" in clear["text"]


def test_overlapping_intervals_are_a_tie_of_every_combination_within_noise() -> None:
    tied = ranking.decide([row("a", 110, (100, 120)), row("b", 104, (96, 112)), row("c", 99, (97, 101)),
                           row("d", 80, (75, 85))], "ok_rps")
    assert tied["winner"] is None and tied["tied"] == ["a", "b", "c"]
    assert tied["text"].startswith("No winner: a, b, c are tied within noise")


def test_lower_is_better_figures_use_the_same_rule() -> None:
    # ranked best first by the caller: for p95 the lowest comes first
    assert ranking.decide([row("fast", 20, (19, 21)), row("slow", 30, (29, 31))], "p95_ms")["winner"] == "fast"
    assert ranking.decide([row("fast", 20, (19, 29.5)), row("slow", 30, (29, 31))], "p95_ms")["winner"] is None


def test_without_an_interval_no_winner_is_named_and_the_way_out_is_said() -> None:
    out = ranking.decide([row("a", 5, None), row("b", 3, (2, 4))], "goodput_rps")
    assert out["winner"] is None and "a has no interval" in out["text"] and "sweep.repeat" in out["text"]


def test_unusable_combinations_do_not_compete() -> None:
    only = ranking.decide([row("a", 5, (4, 6)), row("b", 9, (8, 10), usable=False)], "ok_rps")
    assert only["winner"] == "a" and "only combination" in only["text"]
    assert ranking.decide([row("b", None, None, usable=False)], "ok_rps")["winner"] is None
