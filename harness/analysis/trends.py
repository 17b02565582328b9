"""Verdicts from a run's time series, with rule and evidence: a ramp's knee, a soak's drift and leaks."""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.stats import resource_series
from harness.analysis.windows import windows
from harness.scenario.plan import LoadPlan

MAX_LEVELS = 12  # distinct offered loads kept as they are; more are binned
LEVEL_BINS = 10
KNEE_LATENCY_FACTOR = 2.0
KNEE_ERROR_RATE = 0.01
KNEE_DELIVERY = 0.90
KNEE_RULE = (
    "Measured seconds are grouped by offered load (the planned target: whole users in the closed "
    f"model, req/s in the open model; up to {MAX_LEVELS} distinct levels, otherwise {LEVEL_BINS} "
    "equal-width bins). A level bends when its median per-second p95 exceeds "
    f"{KNEE_LATENCY_FACTOR:g}x that of the lowest level, when more than {KNEE_ERROR_RATE:.0%} of its "
    f"requests fail, or (open model) when it delivers less than {KNEE_DELIVERY:.0%} of the offered "
    "rate. The knee is the highest level below the first level from which every higher level bends "
    "(a single noisy level does not count); the saturation throughput is the highest median "
    "successful req/s of any level.")

SOAK_MIN_SECONDS = 60.0
SOAK_CHUNKS = 20  # the soak's fits run over this many equal windows of the measured run
SOAK_STEADY = 0.10  # offered load may vary by this fraction and still count as a steady soak
LEAK_MIN_MB = 10.0
LEAK_MIN_FRACTION = 0.05
LEAK_MIN_R2 = 0.6
DRIFT_P50 = 0.20
DRIFT_P99 = 0.50
DRIFT_MIN_R2 = 0.5
SOAK_RULE = (
    f"Leaking: the server's total RSS grows along a steady line (R² >= {LEAK_MIN_R2:g}) by more than "
    f"max({LEAK_MIN_MB:g} MB, {LEAK_MIN_FRACTION:.0%} of its starting size) over the measured run. "
    f"Drifting: the fitted p50 moves by more than {DRIFT_P50:.0%} or the fitted p99 by more than "
    f"{DRIFT_P99:.0%} over the run along a line with R² >= {DRIFT_MIN_R2:g}. Stable: neither.")


def load_levels(win: pd.DataFrame, model: str) -> pd.DataFrame:
    """Measured windows grouped by the plan's target (closed model: whole users): offered (the
    level), seconds, rps, ok_rps (medians), p50/p95/p99 (medians of the per-second values) and
    error_rate (over all the level's requests)."""
    w = win.dropna(subset=["target"])
    w = w[w["requests"] > 0]
    w = w.assign(offered=np.floor(w["target"] + 1e-9) if model == "closed" else w["target"])
    if w.empty:
        return pd.DataFrame(columns=["offered", "seconds", "rps", "ok_rps", "p50_ms", "p95_ms", "p99_ms",
                                     "error_rate"], dtype="float64")
    key = w["offered"].round(3).rename("level")
    if key.nunique() > MAX_LEVELS:
        inner = np.linspace(key.min(), key.max(), LEVEL_BINS + 1)[1:-1]
        key = pd.Series(np.digitize(w["offered"], inner), index=w.index, name="level")
    g = w.groupby(key)
    levels = pd.DataFrame({
        "offered": g["offered"].mean(), "seconds": g.size(), "rps": g["rps"].median(),
        "ok_rps": g["ok_rps"].median(), "p50_ms": g["p50_ms"].median(), "p95_ms": g["p95_ms"].median(),
        "p99_ms": g["p99_ms"].median(), "error_rate": g["errors"].sum() / g["requests"].sum()})
    return levels.sort_values("offered").reset_index(drop=True)


def knee(win: pd.DataFrame, model: str) -> dict[str, Any] | None:
    """The knee and saturation throughput of the measured windows (see KNEE_RULE); None when the
    run tested fewer than three load levels."""
    levels = load_levels(win, model)
    if len(levels) < 3:
        return None
    unit = "users" if model == "closed" else "req/s"
    base = float(levels["p95_ms"].iloc[0])
    bends = (levels["p95_ms"] > KNEE_LATENCY_FACTOR * base) | (levels["error_rate"] > KNEE_ERROR_RATE)
    if model == "open":
        bends |= levels["ok_rps"] < KNEE_DELIVERY * levels["offered"]
    saturation = float(levels["ok_rps"].max())
    result: dict[str, Any] = {"unit": unit, "levels": levels, "rule": KNEE_RULE, "knee": None,
                              "bend": None, "saturation_rps": round(saturation, 1)}
    flags = bends.to_numpy()
    if not flags[-1]:
        top = levels.iloc[-1]
        result["text"] = (f"no knee up to {_num(top['offered'])} {unit}: at the highest load p95 was within "
                          f"{KNEE_LATENCY_FACTOR:g}x of the lowest load's and errors within "
                          f"{KNEE_ERROR_RATE:.0%}; the server was not pushed past its knee")
        return result
    first = int(np.flatnonzero(~flags).max()) + 1 if (~flags).any() else 0  # start of the last run of bends
    bend = levels.iloc[first]
    result["bend"] = _level(bend)
    why = _why(bend, base, model)
    if first == 0:
        result["text"] = f"bent already at the lowest load tested ({_num(bend['offered'])} {unit}): {why}"
        return result
    at = levels.iloc[first - 1]
    result["knee"] = _level(at)
    result["text"] = (f"knee at {_num(at['offered'])} {unit} (served {at['ok_rps']:.0f} req/s, p95 "
                      f"{at['p95_ms']:.3g} ms); at {_num(bend['offered'])} {unit} {why}")
    return result


def _num(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def signed(value: float) -> str:
    """+1,470 / -0.25 / +3.1: a slope for people (no exponent notation)."""
    return f"{value:+,.0f}" if abs(value) >= 100 else f"{value:+.3g}"


def _level(row: pd.Series) -> dict[str, float]:
    return {k: round(float(row[k]), 4) for k in ("offered", "rps", "ok_rps", "p95_ms", "error_rate")}


def _why(row: pd.Series, base: float, model: str) -> str:
    reasons = []
    if row["p95_ms"] > KNEE_LATENCY_FACTOR * base:
        reasons.append(f"p95 was {row['p95_ms']:.3g} ms ({row['p95_ms'] / base:.1f}x the lowest load)")
    if row["error_rate"] > KNEE_ERROR_RATE:
        reasons.append(f"{row['error_rate']:.1%} of requests failed")
    if model == "open" and row["ok_rps"] < KNEE_DELIVERY * row["offered"]:
        reasons.append(f"only {row['ok_rps']:.0f} of {row['offered']:.0f} req/s were served")
    return ", ".join(reasons)


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line: slope, value at the first and last x, and R² (0 when y is flat)."""
    slope, intercept = np.polyfit(x, y, 1)
    fitted = slope * x + intercept
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else 0.0
    return {"slope": float(slope), "start": float(fitted[0]), "end": float(fitted[-1]), "r2": r2}


def is_soak(measured: pd.DataFrame) -> bool:
    """A measured window (per-second windows) long enough and at a steady enough load for `soak`."""
    target = measured["target"].dropna()
    steady = target.empty or target.max() <= (1 + SOAK_STEADY) * target.min()
    return len(measured) >= SOAK_MIN_SECONDS and steady


def soak(chunks: pd.DataFrame, series: pd.DataFrame, workers: pd.DataFrame) -> dict[str, Any] | None:
    """Latency drift and server memory growth over a steady run, with a verdict (see SOAK_RULE).

    `chunks`: measured windows (t, requests, p50_ms, p99_ms), ideally ~20 of them; `series`:
    resource_series rows of the measured window; `workers`: its server_worker rows. None when there
    are fewer than five chunks with requests or five resource ticks.
    """
    chunks = chunks[chunks["requests"] > 0].dropna(subset=["p50_ms"])
    if len(chunks) < 5 or len(series) < 5:
        return None
    span = float(series["t"].iloc[-1] - series["t"].iloc[0])
    hours = span / 3600.0
    t = chunks["t"].to_numpy()
    x = (t + np.diff(t).min() / 2.0) / 3600.0  # window middles
    p50 = linear_fit(x, chunks["p50_ms"].to_numpy())
    p99 = linear_fit(x, chunks["p99_ms"].to_numpy())
    rss_series = series.dropna(subset=["server_rss_mb"])
    rss = linear_fit(rss_series["t"].to_numpy() / 3600.0, rss_series["server_rss_mb"].to_numpy())
    growth = rss["end"] - rss["start"]
    leak_limit = max(LEAK_MIN_MB, LEAK_MIN_FRACTION * rss["start"])
    leaking = growth > leak_limit and rss["r2"] >= LEAK_MIN_R2
    drift50 = (p50["end"] - p50["start"]) / p50["start"] if p50["start"] > 0 else 0.0
    drift99 = (p99["end"] - p99["start"]) / p99["start"] if p99["start"] > 0 else 0.0
    drifting = ((abs(drift50) > DRIFT_P50 and p50["r2"] >= DRIFT_MIN_R2)
                or (abs(drift99) > DRIFT_P99 and p99["r2"] >= DRIFT_MIN_R2))
    evidence = [
        f"server RSS {rss['start']:.0f} -> {rss['end']:.0f} MB over {hours:.2f} h: "
        f"{signed(rss['slope'])} MB/h (R² {rss['r2']:.2f}; leak limit +{leak_limit:.0f} MB over the run)",
        f"p50 {p50['start']:.3g} -> {p50['end']:.3g} ms: {signed(p50['slope'])} ms/h ({drift50:+.0%} over the run, "
        f"R² {p50['r2']:.2f})",
        f"p99 {p99['start']:.3g} -> {p99['end']:.3g} ms: {signed(p99['slope'])} ms/h ({drift99:+.0%} over the run, "
        f"R² {p99['r2']:.2f})",
    ]
    per_worker = []
    for pid, rows in workers.groupby("pid"):
        if len(rows) >= 5:
            fit = linear_fit(rows["t"].to_numpy() / 3600.0, rows["rss_bytes"].to_numpy() / 2**20)
            per_worker.append({"pid": int(pid), "rss_start_mb": round(fit["start"], 1),
                               "rss_end_mb": round(fit["end"], 1), "rss_mb_per_hour": round(fit["slope"], 2),
                               "rss_r2": round(fit["r2"], 3)})
            evidence.append(f"worker {pid}: {fit['start']:.0f} -> {fit['end']:.0f} MB, "
                            f"{signed(fit['slope'])} MB/h (R² {fit['r2']:.2f})")
    verdict = "leaking" if leaking else "drifting" if drifting else "stable"
    return {"verdict": verdict, "evidence": evidence, "rule": SOAK_RULE, "hours": hours,
            "rss_mb_per_hour": round(rss["slope"], 2), "rss_growth_mb": round(growth, 1),
            "leak_limit_mb": round(leak_limit, 1), "p50_ms_per_hour": round(p50["slope"], 4),
            "p99_ms_per_hour": round(p99["slope"], 4), "p50_drift": round(drift50, 4),
            "p99_drift": round(drift99, 4), "workers": per_worker,
            "fits": {"rss": rss, "p50": p50, "p99": p99}, "chunks": chunks, "series": rss_series}


def verdicts(df: pd.DataFrame, plan: LoadPlan | None, resources: pd.DataFrame, measured_windows: pd.DataFrame,
             model: str, warmup: float, until: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The knee (a ramp) and the soak verdict (a long steady run) of one run; None where it does not apply.

    `measured_windows`: the per-second windows of the measured part (analysis.windows)."""
    soak_result = None
    if is_soak(measured_windows):
        chunks = windows(df, (until - warmup) / SOAK_CHUNKS, plan, until=until, start=warmup)
        series = resource_series(resources)
        in_window = series[(series["t"] >= warmup) & (series["t"] <= until)]
        workers = resources[(resources["role"] == "server_worker") & (resources["t"] >= warmup)
                            & (resources["t"] <= until)]
        soak_result = soak(chunks, in_window, workers)
    return knee(measured_windows, model), soak_result


def summary_blocks(knee_result: dict[str, Any] | None, soak_result: dict[str, Any] | None) -> dict[str, Any]:
    """summary.json's `knee` and `soak` blocks: the verdicts, their figures and rules, without the frames
    the charts draw from (only the blocks that apply)."""
    out: dict[str, Any] = {}
    if knee_result is not None:
        at = knee_result["knee"]
        unit_key = "knee_users" if knee_result["unit"] == "users" else "knee_rps"
        out["knee"] = {"unit": knee_result["unit"], unit_key: at["offered"] if at else None,
                       "knee": at, "bend": knee_result["bend"], "saturation_rps": knee_result["saturation_rps"],
                       "levels": len(knee_result["levels"]), "text": knee_result["text"], "rule": knee_result["rule"]}
    if soak_result is not None:
        fits = soak_result["fits"]
        out["soak"] = {"verdict": soak_result["verdict"], "hours": round(soak_result["hours"], 4),
                       "rss_mb_per_hour": soak_result["rss_mb_per_hour"], "rss_r2": round(fits["rss"]["r2"], 3),
                       "rss_growth_mb": soak_result["rss_growth_mb"], "leak_limit_mb": soak_result["leak_limit_mb"],
                       "p50_ms_per_hour": soak_result["p50_ms_per_hour"], "p50_drift": soak_result["p50_drift"],
                       "p50_r2": round(fits["p50"]["r2"], 3), "p99_ms_per_hour": soak_result["p99_ms_per_hour"],
                       "p99_drift": soak_result["p99_drift"], "p99_r2": round(fits["p99"]["r2"], 3),
                       "workers": soak_result["workers"], "evidence": soak_result["evidence"],
                       "rule": soak_result["rule"]}
    return out
