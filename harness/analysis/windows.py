"""Figures per time window of intended send time (per second by default), exactly from the samples.

Windows cover the warm-up too (charts shade it); the plan's target and offered load are averaged
over each window, so a window's achieved throughput and latency can be set against what was asked.
Also Little's law (L = lambda x W) checked per window, the run's own consistency test.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.results.samples import NOT_SENT
from harness.scenario.plan import LoadPlan

WINDOW_QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99, "max_ms": 1.0}
LITTLE_TOLERANCE = 0.10  # |in flight / (throughput x latency) - 1| allowed per window
LITTLE_MIN_FRACTION = 0.90  # of eligible windows within the tolerance for the run to be consistent
LITTLE_MAX_SPAN = 0.10  # mean time in the system, as a fraction of the window, for a window to be checked


def grouped_quantiles(groups: np.ndarray, values: np.ndarray, size: int,
                      quantiles: Sequence[float]) -> np.ndarray:
    """Exact quantiles (numpy's linear interpolation) of `values` in each group 0..size-1.

    Values are gathered by group (a stable sort, fast on time-ordered samples), then each group is
    sorted on its own; returns shape (len(quantiles), size), NaN for empty groups.
    """
    out = np.full((len(quantiles), size), np.nan)
    if values.size == 0:
        return out
    ordered = values[np.argsort(groups, kind="stable")]
    counts = np.bincount(groups, minlength=size)[:size]
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for k in np.flatnonzero(counts > 1):
        ordered[bounds[k]:bounds[k + 1]].sort()
    has = counts > 0
    first, count = (np.cumsum(counts) - counts)[has], counts[has]
    for i, q in enumerate(quantiles):
        pos = first + q * (count - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, first + count - 1)
        out[i, has] = ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)
    return out


def time_in_flight(start: np.ndarray, end: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Request-seconds in flight (between start and end) within each window [edges[k], edges[k+1]).

    Exact: the integral of the in-flight count, from sorted starts and ends and their running sums.
    """
    starts, ends = np.sort(start, kind="stable"), np.sort(end, kind="stable")  # nearly sorted already
    start_sums = np.concatenate([[0.0], np.cumsum(starts)])
    end_sums = np.concatenate([[0.0], np.cumsum(ends)])
    ks = np.searchsorted(starts, edges, side="right")
    ke = np.searchsorted(ends, edges, side="right")
    integral = (ks * edges - start_sums[ks]) - (ke * edges - end_sums[ke])
    return np.diff(integral)


def target_load(plan: LoadPlan, edges: np.ndarray, steps: int = 20) -> np.ndarray:
    """The plan's target averaged over each window: whole active users in the closed model (sampled
    at `steps` points per window), the planned mean rate in req/s in the open model (exact)."""
    width = np.diff(edges)
    if plan.model == "closed":
        points = edges[:-1, None] + (np.arange(steps) + 0.5)[None, :] / steps * width[:, None]
        return np.array([[plan.users_at(float(t)) for t in row] for row in points]).mean(axis=1)
    cumulative = np.array([plan.expected_requests(float(t)) for t in edges])
    return np.diff(cumulative) / width


def offered_load(plan: LoadPlan, edges: np.ndarray) -> np.ndarray:
    """What the plan offered in each window: its target, except with Poisson arrivals, where it is
    the rate of the plan's own seeded arrival times (independent of the samples)."""
    if plan.model == "open" and plan.arrival == "poisson":
        counts, _ = np.histogram(np.fromiter(plan.arrivals(), dtype=np.float64), bins=edges)
        return counts / np.diff(edges)
    return target_load(plan, edges)


def _count(idx: np.ndarray, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    return np.bincount(idx, weights=weights, minlength=size)[:size]


def _mean(idx: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    counts = _count(idx, size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, _count(idx, size, values) / np.maximum(counts, 1), np.nan)


def windows(df: pd.DataFrame, width: float = 1.0, plan: LoadPlan | None = None,
            until: float | None = None, start: float = 0.0) -> pd.DataFrame:
    """Figures per window [t, t + width) of intended send time, from `start` to `until` (default:
    the plan's end, else the last sample).

    Columns: t; target and offered (the plan's target and what it offered, see target_load and
    offered_load: req/s in the open model, active users in the closed model; NaN without a plan);
    requests (sent), ok, errors, errors_<kind> per
    error kind, not_sent, rps, ok_rps; p50_ms p90_ms p95_ms p99_ms max_ms mean_ms (latency from the
    intended send time, responses only); in_flight (time-averaged requests between start and end:
    on the wire); in_system (the same from intended send time to end: waiting for a slot included);
    system_ms (mean time from intended send to end of every sent request that ended, errors too);
    little_lw (throughput x system_ms: request-seconds in the system of the window's requests /
    width); send_wait_ms, service_ms, srv_queue_ms, srv_infer_ms, srv_other_ms (means; srv_* only
    over responses with Server-Timing, other = service - queue - inference).
    """
    intended = df["intended"].to_numpy(dtype=np.float64)
    if until is None:
        until = plan.duration if plan is not None else (float(intended.max()) + width if intended.size else width)
    size = max(1, int(np.ceil((until - start) / width - 1e-9)))
    edges = start + np.arange(size + 1) * width
    keep = (intended >= start) & (intended < edges[-1])
    idx = np.where(keep, (intended - start) // width, 0).astype(np.int64)
    codes, uniques = pd.factorize(df["error"].fillna(""))
    code_of = {str(k): i for i, k in enumerate(uniques)}
    not_sent = codes == code_of.get(NOT_SENT, -2)
    sent = keep & ~not_sent
    failed = sent & (codes != code_of.get("", -2))
    status = df["status"].to_numpy()
    sent_at = df["start"].to_numpy(dtype=np.float64)
    end = df["end"].to_numpy(dtype=np.float64)

    out: dict[str, Any] = {"t": edges[:-1]}
    out["target"] = target_load(plan, edges) if plan is not None else np.full(size, np.nan)
    out["offered"] = offered_load(plan, edges) if plan is not None else np.full(size, np.nan)
    requests = _count(idx[sent], size)
    errors = _count(idx[failed], size)
    out.update(requests=requests, ok=requests - errors, errors=errors)
    for kind in sorted(k for k in code_of if k not in ("", NOT_SENT)):
        out[f"errors_{kind}"] = _count(idx[sent & (codes == code_of[kind])], size)
    out["not_sent"] = _count(idx[keep & not_sent], size)
    out["rps"] = requests / width
    out["ok_rps"] = (requests - errors) / width

    answered = sent & (status > 0)
    latency = (end[answered] - intended[answered]) * 1000.0
    values = grouped_quantiles(idx[answered], latency, size, list(WINDOW_QUANTILES.values()))
    out.update(zip(WINDOW_QUANTILES, values))
    out["mean_ms"] = _mean(idx[answered], latency, size)

    timed = sent & np.isfinite(sent_at) & np.isfinite(end)
    out["in_flight"] = time_in_flight(sent_at[timed], end[timed], edges) / width
    out["in_system"] = time_in_flight(intended[timed], end[timed], edges) / width
    in_system = (end - intended)[timed]
    out["system_ms"] = _mean(idx[timed], in_system * 1000.0, size)
    out["little_lw"] = _count(idx[timed], size, in_system) / width

    out["send_wait_ms"] = _mean(idx[timed], (sent_at - intended)[timed] * 1000.0, size)
    service = (end - sent_at) * 1000.0
    out["service_ms"] = _mean(idx[answered], service[answered], size)
    infer = df["srv_infer_ms"].to_numpy(dtype=np.float64)
    queue = np.nan_to_num(df["srv_queue_ms"].to_numpy(dtype=np.float64))
    split = answered & np.isfinite(infer)
    out["srv_queue_ms"] = _mean(idx[split], queue[split], size)
    out["srv_infer_ms"] = _mean(idx[split], infer[split], size)
    out["srv_other_ms"] = _mean(idx[split], (service - queue - infer)[split], size)
    return pd.DataFrame(out)


def per_second(df: pd.DataFrame, plan: LoadPlan | None = None) -> pd.DataFrame:
    """`windows` one second wide, the window start as an integer `second` column."""
    return windows(df, 1.0, plan).rename(columns={"t": "second"}).astype({"second": "int64"})


def little_sides(win: pd.DataFrame, model: str) -> tuple[pd.Series, pd.Series]:
    """(planned side, measured side) of L = lambda x W per window, each side using the plan once.

    Closed model: L = the planned users against lambda x W measured (requests/s x mean time in the
    system). Open model: lambda = the planned rate times the measured W against L measured (time-
    averaged requests in the system). The two sides only agree when every planned request was sent,
    recorded and timed: lost sample rows, a generator too busy to keep its users in requests, or
    timestamps out of step pull them apart.
    """
    if model == "closed":
        return win["offered"], win["little_lw"]
    return win["offered"] * win["system_ms"] / 1000.0, win["in_system"]


def little_check(win: pd.DataFrame, model: str, width: float = 1.0, min_requests: int = 20) -> dict[str, Any]:
    """Little's law per window as a consistency test of the measurement itself (see little_sides).

    Checked: windows with at least `min_requests` requests, a planned load, and a mean time in the
    system of at most a tenth of the window. Longer requests straddle window edges (during a stall
    the law only holds over spans much longer than the stall), so such windows and the one after
    each (where their requests spill over) are `skipped`. The run is consistent when at least 90%
    of the checked windows agree within +-10%.
    """
    planned, measured_side = little_sides(win, model)
    busy = (win["requests"] >= min_requests) & (planned > 0)
    long = ~(win["system_ms"] <= LITTLE_MAX_SPAN * width * 1000.0)
    ok = busy & ~long & ~long.shift(1, fill_value=False)
    eligible = win[ok]
    skipped = int((busy & ~ok).sum())
    if eligible.empty:
        return {"windows": 0, "within": 0, "skipped": skipped, "fraction_within": None, "median_ratio": None,
                "worst_ratio": None, "worst_t": None, "consistent": None}
    ratio = measured_side[ok] / planned[ok]
    within = int(((ratio - 1.0).abs() <= LITTLE_TOLERANCE).sum())
    worst = (ratio - 1.0).abs().idxmax()
    fraction = within / len(eligible)
    return {"windows": int(len(eligible)), "within": within, "skipped": skipped, "fraction_within": round(fraction, 4),
            "median_ratio": round(float(ratio.median()), 4), "worst_ratio": round(float(ratio[worst]), 4),
            "worst_t": float(eligible.loc[worst, "t"]), "consistent": fraction >= LITTLE_MIN_FRACTION}


