"""Rates and means from the target's scraped Prometheus samples (results.metrics), for the charts."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd


def label_values(labels: pd.Series, key: str) -> pd.Series:
    """The value of one label in each row's label string ('' when absent)."""
    pattern = re.compile(rf'(?:^|,){re.escape(key)}="((?:[^"\\]|\\.)*)"')
    return labels.map(lambda s: (m.group(1) if (m := pattern.search(s)) else ""))


def _totals(metrics: pd.DataFrame, name: str, by: str | None = None) -> pd.DataFrame:
    """Sum of `name` over label sets per scrape time (columns: one per value of label `by`)."""
    rows = metrics[metrics["name"] == name]
    if rows.empty:
        return pd.DataFrame()
    key = label_values(rows["labels"], by) if by else pd.Series("total", index=rows.index)
    return rows.assign(key=key).pivot_table(index="t", columns="key", values="value", aggfunc="sum").sort_index()


def counter_rates(metrics: pd.DataFrame, name: str, by: str | None = None) -> pd.DataFrame:
    """Per-second rate of a counter between scrapes (resets clipped to 0), one column per `by` value."""
    totals = _totals(metrics, name, by).fillna(0.0)
    if len(totals) < 2:
        return pd.DataFrame()
    dt = np.diff(totals.index.to_numpy())
    rates = totals.diff().iloc[1:].clip(lower=0.0).div(dt, axis=0)
    return rates


def histogram_means(metrics: pd.DataFrame, base: str, scale: float = 1.0) -> pd.Series:
    """Mean observation per scrape interval (delta sum / delta count, times `scale`); NaN when idle."""
    sums, counts = _totals(metrics, f"{base}_sum"), _totals(metrics, f"{base}_count")
    if len(sums) < 2 or counts.empty:
        return pd.Series(dtype="float64")
    d_sum = sums["total"].diff().iloc[1:].clip(lower=0.0)
    d_count = counts["total"].reindex(sums.index).diff().iloc[1:].clip(lower=0.0)
    return (d_sum / d_count.where(d_count > 0)) * scale


def histogram_counts(metrics: pd.DataFrame, base: str) -> pd.Series:
    """Observations per bucket over the run (last scrape minus first), indexed by upper bound `le`."""
    totals = _totals(metrics, f"{base}_bucket", "le")
    if len(totals) < 2:
        return pd.Series(dtype="float64")
    grown = (totals.iloc[-1] - totals.iloc[0]).clip(lower=0.0)
    grown.index = grown.index.map(lambda le: float("inf") if le == "+Inf" else float(le))
    cumulative = grown.sort_index()
    return cumulative.diff().fillna(cumulative).clip(lower=0.0)
