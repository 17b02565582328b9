"""Which combination of a sweep is best, and whether the data can tell: intervals and the tie rule.

A figure measured once is one draw from a noisy machine (three repeats of one scenario here vary by
a coefficient of variation of about 4%), so a sweep names a winner only when the best figure's
interval clears the runner-up's. Intervals, at 95%:

- repeats: Student's t interval of the mean of the repeats' figures (the between-run noise itself);
- one run: a bootstrap of the figure's per-window values (within-run noise only: it cannot see a
  machine that was busier during one whole run, which is why `sweep.repeat` exists);
- a capacity search: its bracket, last passing .. first failing rate.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
# two-sided 95% quantiles of Student's t by degrees of freedom (1..30); beyond, the normal's 1.96
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str


def t_interval(values: Sequence[float]) -> Interval | None:
    """The 95% t interval of the mean of two or more values (None for fewer)."""
    if len(values) < 2:
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    df = len(values) - 1
    half = (_T95[df - 1] if df <= len(_T95) else 1.96) * sd / math.sqrt(len(values))
    return Interval(mean - half, mean + half, f"95% t interval of the mean of {len(values)} repeats")


def bootstrap_interval(values: np.ndarray, statistic: Literal["median", "mean"], seed: int = 0) -> Interval | None:
    """The 95% percentile-bootstrap interval of the statistic of per-window values (None for under 5)."""
    if values.size < 5:
        return None
    stat = np.median if statistic == "median" else np.mean
    draws = stat(np.random.default_rng(seed).choice(values, (BOOTSTRAP_RESAMPLES, values.size)), axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(float(low), float(high),
                    f"95% bootstrap of the {statistic} of {values.size} one-second windows (one run)")


def bracket_interval(capacity: float | None, first_failing: float | None) -> Interval | None:
    """A capacity search's bracket: the capacity lies between the last passing and first failing rate."""
    if capacity is None:
        return None
    return Interval(capacity, first_failing if first_failing is not None else math.inf,
                    "capacity bracket: last passing .. first failing rate")


def overlaps(a: Interval, b: Interval) -> bool:
    return a.low <= b.high and b.low <= a.high


def decide(ordered: list[dict[str, Any]], figure: str) -> dict[str, Any]:
    """The verdict over a ranking (best first; rows with label, figure, usable, interval): the winner
    when its interval clears the runner-up's, else the combinations tied with the best within noise.

    Returns winner (a label or None), tied (labels, the best first; [] when there is a winner or
    nothing to rank) and text (the sentence for the console and the page)."""
    usable = [r for r in ordered if r["usable"]]
    if not usable:
        return {"winner": None, "tied": [], "text": "no combination produced a usable figure"}
    best = usable[0]
    head = f"{best['label']} with {figure} = {best['figure']:.4g}{_show(best['interval'])}"
    if len(usable) == 1:
        return {"winner": best["label"], "tied": [],
                "text": f"Winner: {head}, the only combination with a usable figure"}
    runner = usable[1]
    missing = [r["label"] for r in (best, runner) if r["interval"] is None]
    if missing:
        return {"winner": None, "tied": [best["label"], runner["label"]],
                "text": (f"No winner declared: best is {head}, but {', '.join(missing)} has no interval (one "
                         "run gives one only for a figure measured per window, over at least 5 measured "
                         "seconds); set sweep.repeat (e.g. 3)")}
    if not overlaps(best["interval"], runner["interval"]):
        ratio = best["figure"] / runner["figure"] if runner["figure"] else math.inf
        caveat = ("; from one run each, whose intervals see only the noise within a run: confirm with "
                  "--repeat 3" if "(one run)" in best["interval"].method else "")
        return {"winner": best["label"], "tied": [],
                "text": (f"Winner: {head}, {ratio:.2f}x the runner-up {runner['label']} "
                         f"({runner['figure']:.4g}{_show(runner['interval'])}); the intervals do not overlap"
                         + caveat)}
    tied = [r["label"] for r in usable if r["interval"] is not None and overlaps(best["interval"], r["interval"])]
    return {"winner": None, "tied": tied,
            "text": (f"No winner: {', '.join(tied)} are tied within noise (their intervals overlap the best's; "
                     f"best point figure {head})")}


def _show(interval: Interval | None) -> str:
    return "" if interval is None else f" [{interval.low:.4g}, {interval.high:.4g}]"
