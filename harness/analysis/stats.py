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

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.results.samples import NOT_SENT, TIMEOUT

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
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
