"""Exact statistics from the raw sample rows (pandas/numpy): whole run, per stage, accounting.

Latency is measured from each request's intended send time (open model: its scheduled arrival;
closed model: the moment the user sent it). Percentiles use numpy's linear interpolation over
every response received (any status); requests that failed without a response are counted as
errors and excluded from latency. Requests whose intended time falls in the warm-up are excluded.
"""
from __future__ import annotations

import gzip
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.http_client import TIMEOUT
from harness.samples import NOT_SENT

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "p999": 99.9}
DTYPES = {"intended": "float64", "start": "float64", "end": "float64", "status": "int32",
          "error": "string", "bytes": "int64", "stage": "int32", "gen": "int32",
          "srv_queue_ms": "float64", "srv_infer_ms": "float64"}
EMPTY_AS_NA = {c: [""] for c in ("start", "end", "srv_queue_ms", "srv_infer_ms")}


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


def server_timing_split(df: pd.DataFrame) -> dict[str, float] | None:
    """Median client latency split into server queue, inference and the rest (network/HTTP/parse)."""
    timed = df.dropna(subset=["srv_infer_ms"])
    timed = timed[timed["status"] > 0]
    if timed.empty:
        return None
    client = (timed["end"] - timed["start"]) * 1000.0
    return {"queue_ms_p50": round(float(timed["srv_queue_ms"].median()), 3),
            "infer_ms_p50": round(float(timed["srv_infer_ms"].median()), 3),
            "other_ms_p50": round(float((client - timed["srv_queue_ms"] - timed["srv_infer_ms"]).median()), 3)}


def per_second(df: pd.DataFrame) -> pd.DataFrame:
    """Requests, errors and latency percentiles per second of intended time (for charts and checks)."""
    sent = df[df["error"] != NOT_SENT].copy()
    if sent.empty:
        return pd.DataFrame(columns=["second", "requests", "errors", "p50_ms", "p95_ms", "p99_ms"])
    sent["second"] = np.floor(sent["intended"]).astype(int)
    sent["latency_ms"] = (sent["end"] - sent["intended"]) * 1000.0
    grouped = sent.groupby("second")
    out = pd.DataFrame({
        "requests": grouped.size(),
        "errors": grouped["error"].apply(lambda s: int((s != "").sum())),
        "p50_ms": grouped["latency_ms"].quantile(0.50),
        "p95_ms": grouped["latency_ms"].quantile(0.95),
        "p99_ms": grouped["latency_ms"].quantile(0.99),
    })
    return out.reset_index()
