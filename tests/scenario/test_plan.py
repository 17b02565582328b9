"""Load plans are pure: stage interpolation, closed-model users, open-model arrival schedules."""
from __future__ import annotations

import math

import numpy as np
import pytest

from harness.scenario.plan import LoadPlan

SPIKE = [(10, 4), (0, 48), (10, 48), (0, 4), (10, 4)]


def test_stages_interpolate_from_the_previous_target() -> None:
    plan = LoadPlan.from_stages("closed", [(10, 10), (10, 30), (10, 30)])
    assert plan.duration == 30
    assert plan.target_at(0) == 0
    assert plan.target_at(5) == pytest.approx(5)
    assert plan.target_at(15) == pytest.approx(20)
    assert plan.target_at(25) == pytest.approx(30)
    assert plan.target_at(99) == 30


def test_zero_duration_stage_jumps_and_repeated_target_holds() -> None:
    plan = LoadPlan.from_stages("closed", SPIKE)
    assert [plan.users_at(t) for t in (9.99, 10.0, 15.0, 19.99, 20.0, 29.9)] == [3, 48, 48, 48, 4, 4]
    assert plan.stage_at(15) == 2 and plan.stage_at(25) == 4
    assert plan.describe_stage(1) == "jump to 48 users"
    assert plan.describe_stage(2) == "hold 48 users for 10s"
    assert plan.describe_stage(0) == "0 -> 4 users over 10s"


def test_start_target() -> None:
    plan = LoadPlan.from_stages("closed", [(10, 11)], start=1)
    assert plan.users_at(0) == 1 and plan.users_at(5) == 6


def test_next_activation_of_a_user() -> None:
    plan = LoadPlan.from_stages("closed", SPIKE)
    assert plan.next_activation(0, 0) == pytest.approx(2.5)   # ramp 0 -> 4 over 10 s reaches 1 at 2.5 s
    assert plan.next_activation(3, 0) == pytest.approx(10.0)
    assert plan.next_activation(40, 0) == pytest.approx(10.0)  # the jump
    assert plan.next_activation(40, 21) == math.inf            # never again after the drop
    assert plan.next_activation(1, 12) == 12                   # already active


def test_constant_arrivals_are_evenly_spaced_and_exact_in_count() -> None:
    plan = LoadPlan.from_stages("open", [(10, 100)], start=100)
    arrivals = np.array(list(plan.arrivals()))
    assert len(arrivals) == 1000 == plan.planned_count()
    assert np.allclose(np.diff(arrivals), 0.01)
    assert arrivals[0] == pytest.approx(0.005)


def test_arrivals_follow_a_ramp() -> None:
    plan = LoadPlan.from_stages("open", [(10, 100)])  # 0 -> 100 req/s: 500 requests, quadratic growth
    arrivals = np.array(list(plan.arrivals()))
    assert len(arrivals) == 500
    first_half = np.sum(arrivals < 5)
    assert first_half == 125  # integral of the rate over the first 5 s
    assert np.all(np.diff(arrivals) > 0)


def test_arrival_counts_per_stage_match_the_rates() -> None:
    plan = LoadPlan.from_stages("open", [(10, 50), (0, 200), (5, 200), (0, 50), (5, 50)], start=50)
    arrivals = np.array(list(plan.arrivals()))
    assert np.sum(arrivals < 10) == 500
    assert np.sum((arrivals >= 10) & (arrivals < 15)) == 1000
    assert np.sum(arrivals >= 15) == 250


def test_poisson_is_seeded_reproducible_and_has_the_right_rate() -> None:
    plan = LoadPlan.from_stages("open", [(100, 200)], start=200, arrival="poisson", seed=7)
    a = np.array(list(plan.arrivals()))
    b = np.array(list(plan.arrivals()))
    assert np.array_equal(a, b)
    assert abs(len(a) - 20000) < 4 * math.sqrt(20000)
    gaps = np.diff(a)
    assert gaps.mean() == pytest.approx(1 / 200, rel=0.03)
    assert gaps.std() == pytest.approx(1 / 200, rel=0.05)  # exponential: std == mean
    other = np.array(list(LoadPlan.from_stages("open", [(100, 200)], start=200, arrival="poisson",
                                               seed=8).arrivals()))
    assert not np.array_equal(a[:100], other[:100])


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
def test_generator_parts_partition_the_schedule(arrival: str) -> None:
    plan = LoadPlan.from_stages("open", [(20, 500)], start=100, arrival=arrival, seed=3)
    whole = list(plan.arrivals())
    parts = [list(plan.arrivals(p, 3)) for p in range(3)]
    assert sorted(x for part in parts for x in part) == whole
    assert [len(p) for p in parts] == [plan.planned_count(p, 3) for p in range(3)]
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1


def test_long_plans_are_generated_lazily() -> None:
    plan = LoadPlan.from_stages("open", [(3600 * 24, 50_000)], start=50_000)
    arrivals = plan.arrivals()
    first = [next(arrivals) for _ in range(10)]
    assert first[0] == pytest.approx(0.5 / 50_000)
