"""Exact statistics from the raw sample rows (pandas/numpy): whole run, stages, time windows.

Latency is measured from each request's intended send time (open model: its scheduled arrival;
closed model: the moment the user sent it). Percentiles use numpy's linear interpolation over
every response received (any status); requests that failed without a response are counted as
errors and excluded from latency. Requests whose intended time falls in the warm-up are excluded.
Time windows (per second by default) bucket requests by intended send time and cover the warm-up
too (charts shade it); resource series are on the same clock (seconds from the run's start).
Every function is pure: DataFrames and arrays in, DataFrames and dicts out.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from harness.engines.http_client import TIMEOUT
from harness.scenario.plan import LoadPlan
from harness.results.samples import NOT_SENT

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
DTYPES = {"intended": "float64", "start": "float64", "end": "float64", "status": "int32",
          "error": "string", "bytes": "int64", "stage": "int32", "gen": "int32",
          "srv_queue_ms": "float64", "srv_infer_ms": "float64", "srv_total_ms": "float64"}
EMPTY_AS_NA = {c: [""] for c in ("start", "end", "srv_queue_ms", "srv_infer_ms", "srv_total_ms")}


def sample_files(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob("samples-*.csv*") if p.suffix in (".csv", ".gz"))


def _complete_lines(path: Path) -> bytes:
    """The file up to its last newline: a line torn by a killed writer is dropped, never misread."""
    data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    cut = data.rfind(b"\n")
    return data[:cut + 1] if cut >= 0 else b""


def load_samples(run_dir: Path) -> pd.DataFrame:
    frames = []
    for path in sample_files(run_dir):
        data = _complete_lines(path)
        if data.count(b"\n") <= 1:
            continue
        frames.append(pd.read_csv(io.BytesIO(data), dtype=DTYPES, keep_default_na=False,
                                  na_values=EMPTY_AS_NA))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})
    df = pd.concat(frames, ignore_index=True)
    if "srv_total_ms" not in df:  # written before samples carried the server's total time
        df["srv_total_ms"] = np.nan
    return df.sort_values("intended", kind="stable", ignore_index=True)


def latency_stats(latency_ms: np.ndarray) -> dict[str, float | None]:
    if latency_ms.size == 0:
        return {k: None for k in [*PERCENTILES, "max", "mean", "min"]}
    values = np.percentile(latency_ms, list(PERCENTILES.values()))
    out: dict[str, float | None] = {k: round(float(v), 3) for k, v in zip(PERCENTILES, values)}
    out["max"] = round(float(latency_ms.max()), 3)
    out["mean"] = round(float(latency_ms.mean()), 3)
    out["min"] = round(float(latency_ms.min()), 3)
    return out


def window_figures(df: pd.DataFrame, seconds: float) -> dict[str, Any]:
    """The headline figures of one time window of samples."""
    sent = df[df["error"] != NOT_SENT]
    answered = sent[sent["status"] > 0]
    latency = ((answered["end"] - answered["intended"]) * 1000.0).to_numpy()
    errors = int((sent["error"] != "").sum())
    requests = int(len(sent))
    ok = requests - errors
    kinds = sent.loc[sent["error"] != "", "error"].value_counts()
    by_status = answered["status"].value_counts().sort_index()
    return {
        "requests": requests,
        "ok": ok,
        "errors": errors,
        "error_rate": round(errors / requests, 6) if requests else 0.0,
        "errors_by_kind": {str(k): int(v) for k, v in kinds.items()},
        "status_counts": {str(k): int(v) for k, v in by_status.items()},
        "not_sent": int((df["error"] == NOT_SENT).sum()),
        "rps": round(requests / seconds, 3) if seconds > 0 else None,
        "ok_rps": round(ok / seconds, 3) if seconds > 0 else None,
        "latency_ms": latency_stats(latency),
        "service_ms": latency_stats(((answered["end"] - answered["start"]) * 1000.0).to_numpy()),
        "send_lag_ms": latency_stats(((sent["start"] - sent["intended"]) * 1000.0).to_numpy()),
    }


def accounting(df: pd.DataFrame) -> dict[str, int]:
    """planned = completed + failed + timed_out + not_sent, over the whole run (warm-up included)."""
    sent = df["error"] != NOT_SENT
    timed_out = int((df["error"] == TIMEOUT).sum())
    failed = int((sent & (df["error"] != "") & (df["error"] != TIMEOUT)).sum())
    completed = int((sent & (df["error"] == "")).sum())
    not_sent = int((~sent).sum())
    return {"planned": completed + failed + timed_out + not_sent, "completed": completed,
            "failed": failed, "timed_out": timed_out, "not_sent": not_sent}


def measured(df: pd.DataFrame, warmup: float, until: float) -> pd.DataFrame:
    return df[(df["intended"] >= warmup) & (df["intended"] < until)]


def server_timing_split(df: pd.DataFrame) -> dict[str, float | None] | None:
    """Median client latency split into server queue, inference and the rest (network/HTTP/parse).

    With the server's own total (Server-Timing `total`), the rest splits further: time inside the
    server's handler outside queue and model (parsing, serialising) and time outside the handler
    (the HTTP server, the network and the client itself: the measurement's own overhead)."""
    timed = df.dropna(subset=["srv_infer_ms"])
    timed = timed[timed["status"] > 0]
    if timed.empty:
        return None
    client = (timed["end"] - timed["start"]) * 1000.0
    total = timed["srv_total_ms"]
    has_total = bool(total.notna().any())
    return {"queue_ms_p50": round(float(timed["srv_queue_ms"].median()), 3),
            "infer_ms_p50": round(float(timed["srv_infer_ms"].median()), 3),
            "other_ms_p50": round(float((client - timed["srv_queue_ms"] - timed["srv_infer_ms"]).median()), 3),
            "server_ms_p50": round(float(total.median()), 3) if has_total else None,
            "outside_server_ms_p50": round(float((client - total).median()), 3) if has_total else None}


WINDOW_QUANTILES = {"p50_ms": 0.50, "p90_ms": 0.90, "p95_ms": 0.95, "p99_ms": 0.99, "max_ms": 1.0}
SERVER_ROLES = ("server", "server_worker")
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


def resource_series(resources: pd.DataFrame) -> pd.DataFrame:
    """Per monitor tick t: CPU % (100 = one core) and RSS MB summed over the server (master and
    workers), the generators and the harness; system_cpu is psutil's whole-machine % (100 = all cores)."""
    columns = ["t"] + [f"{r}_{m}" for r in ("server", "generator", "harness") for m in ("cpu", "rss_mb")]
    if resources.empty:
        return pd.DataFrame(columns=columns + ["system_cpu"], dtype="float64")
    role = resources["role"].replace({"server_worker": "server"})
    frame = pd.DataFrame({"t": resources["t"], "role": role, "cpu": resources["cpu_percent"],
                          "rss_mb": resources["rss_bytes"] / 2**20})
    table = frame.groupby(["t", "role"])[["cpu", "rss_mb"]].sum().unstack("role")
    out = pd.DataFrame({"t": table.index.to_numpy()})
    for name in ("server", "generator", "harness", "system"):
        for metric in ("cpu", "rss_mb"):
            if name == "system" and metric == "rss_mb":
                continue
            key = (metric, name)
            out[f"{name}_{metric}"] = table[key].to_numpy() if key in table.columns else np.nan
    return out


def cpu_seconds(resources: pd.DataFrame, roles: Sequence[str], edges: np.ndarray) -> np.ndarray:
    """CPU-seconds used by the processes of `roles` in each window [edges[k], edges[k+1]).

    Each reading is the CPU % since the previous tick; it is counted at the middle of that interval.
    """
    ticks = np.unique(resources["t"].to_numpy(dtype=np.float64))
    if ticks.size == 0:
        return np.zeros(len(edges) - 1)
    gaps = np.diff(ticks)
    first_gap = float(np.median(gaps)) if gaps.size else 0.5
    interval = dict(zip(ticks, np.concatenate([[first_gap], gaps])))
    rows = resources[resources["role"].isin(roles)]
    dt = rows["t"].map(interval).to_numpy(dtype=np.float64)
    mid = rows["t"].to_numpy(dtype=np.float64) - dt / 2.0
    used, _ = np.histogram(mid, bins=edges, weights=rows["cpu_percent"].to_numpy() / 100.0 * dt)
    return used


def requests_per_cpu_second(requests: float, cpu_s: float) -> float | None:
    """Server efficiency: requests per CPU-second the server processes used (None without CPU data)."""
    return round(requests / cpu_s, 1) if cpu_s > 0 else None


def percentile_spectrum(latency_ms: np.ndarray, points: int = 200) -> pd.DataFrame:
    """Latency at percentiles evenly spaced on the 1/(1-p) log axis (HdrHistogram-style), up to
    the finest percentile the sample count resolves; columns percentile, inverse_tail, latency_ms."""
    if latency_ms.size == 0:
        return pd.DataFrame(columns=["percentile", "inverse_tail", "latency_ms"], dtype="float64")
    inverse_tail = np.logspace(0, np.log10(max(latency_ms.size, 10)), points)
    percentile = 100.0 * (1.0 - 1.0 / inverse_tail)
    values = np.percentile(latency_ms, percentile)
    return pd.DataFrame({"percentile": percentile, "inverse_tail": inverse_tail, "latency_ms": values})


def latency_histogram(latency_ms: np.ndarray, bins: int = 60) -> tuple[np.ndarray, np.ndarray, bool]:
    """Counts and bin edges of the latency distribution; log-spaced bins when it spans > 20x."""
    if latency_ms.size == 0:
        return np.zeros(0), np.zeros(1), False
    low, high = float(latency_ms.min()), float(latency_ms.max())
    log = low > 0 and high / low > 20
    edges = np.geomspace(low, high, bins + 1) if log else np.linspace(low, max(high, low + 1e-3), bins + 1)
    counts, _ = np.histogram(latency_ms, bins=edges)
    return counts, edges, log
