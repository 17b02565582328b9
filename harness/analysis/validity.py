"""Whether a run measured the server or the generator: the run's own verdict, with reasons.

A run is invalid when the load it promised was not delivered for reasons on the generator's
side: a generator process near 100% of a core, open-model requests leaving late while free
slots existed (scheduling lag), or planned arrivals never sent. Waiting for a free slot because
the server is slow is not the generator's fault: that wait is counted in latency, and the
run stays valid (with a note).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from harness.results.samples import NOT_SENT

GENERATOR_CPU_LIMIT = 90.0  # % of one core, like Locust's CPU warning
LAG_LIMIT_MS = 10.0  # p99 of send lag while free slots existed
MIN_SENT_FRACTION = 0.95


@dataclass
class Verdict:
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.reasons


def max_in_flight(sent: pd.DataFrame) -> int:
    """Peak number of requests between start and end at once (from the samples alone)."""
    if sent.empty:
        return 0
    times = np.concatenate([sent["start"].to_numpy(), sent["end"].to_numpy()])
    steps = np.concatenate([np.ones(len(sent)), -np.ones(len(sent))])
    order = np.lexsort((steps, times))  # at equal times count ends first
    return int(np.cumsum(steps[order]).max())


def judge_generator_cpu(resources: pd.DataFrame, start: float, end: float, verdict: Verdict) -> None:
    window = resources[(resources["role"] == "generator") & (resources["t"] >= start) & (resources["t"] <= end)]
    for pid, rows in window.groupby("pid"):
        if len(rows) >= 2 and rows["cpu_percent"].mean() >= GENERATOR_CPU_LIMIT:
            verdict.reasons.append(
                f"generator process {pid} averaged {rows['cpu_percent'].mean():.0f}% of a core "
                f"(limit {GENERATOR_CPU_LIMIT:.0f}%): it, not the server, may be the bottleneck; "
                "raise generator.processes or lower the load")


def judge_open_model(window: pd.DataFrame, slots: int, verdict: Verdict) -> None:
    sent = window[window["error"] != NOT_SENT]
    planned = len(window)
    if planned == 0:
        return
    fraction = len(sent) / planned
    if fraction < MIN_SENT_FRACTION:
        verdict.reasons.append(
            f"only {fraction:.1%} of the planned requests were sent ({planned - len(sent)} not sent): "
            f"raise load.max_in_flight (now {slots}) or generator.processes")
    peak = max_in_flight(sent)
    lag_ms = (sent["start"] - sent["intended"]).to_numpy() * 1000.0
    if peak >= slots:
        verdict.notes.append(
            f"all {slots} in-flight slots were busy at times: requests waited in the generator for the "
            "server, and that wait is part of their latency (open model, no coordinated omission)")
    elif lag_ms.size and np.percentile(lag_ms, 99) > LAG_LIMIT_MS:
        verdict.reasons.append(
            f"requests left {np.percentile(lag_ms, 99):.1f} ms late (p99) although slots were free: "
            "the generator could not keep its schedule; raise generator.processes or lower the rate")
