"""The figure vocabulary: every number a user can threshold, rank, gate, compare or repeat.

Each figure is named once here with where it lives in summary.json, how it is labelled, its
unit, which direction is better, and the per-window column (analysis.windows) that carries the
same measure second by second. Thresholds (`p95_ms < 200`), the regression gate, sweep ranking
(`rank_by`), repeats, the comparison page and capacity probes all read figures through this
module, so a new figure is one entry here.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

Better = Literal["higher", "lower"]


@dataclass(frozen=True)
class Figure:
    name: str  # as written in thresholds, rank_by and comparison CSV columns
    path: str | None  # dotted path in summary.json; None: derived by the run analysis (RunAnalysis)
    label: str  # long label for pages and tables
    short: str  # column header for narrow console tables
    unit: str
    better: Better | None  # None: a count or context figure with no better direction
    window: str | None = None  # the analysis.windows column with the same measure per window
    statistic: Literal["median", "mean"] = "median"  # how the gate summarises per-window values
    words: tuple[str, ...] = ()  # a verdict figure: one of these words, judged with == / != (not a number)


def _latency(name: str, key: str, label: str, window: bool = True) -> Figure:
    return Figure(name, f"latency_ms.{key}", f"{label} latency (ms)", f"{label} ms", "ms", "lower",
                  name if window else None)


TOKEN_LATENCIES = {"ttft": "TTFT", "ttfc": "time to first content", "tpot": "TPOT", "itl": "ITL"}
TOKEN_STATS = {"p50": "p50", "p90": "p90", "p95": "p95", "p99": "p99", "max": "max", "mean": "mean"}
TOKEN_WINDOW_STATS = ("p50", "p95", "p99")  # per-window columns of analysis.tokens.token_windows


def _token_latencies() -> list[Figure]:
    """`ttft_p99_ms` and the like: a generative run's token latencies (analysis.tokens)."""
    return [Figure(f"{kind}_{stat}_ms", f"tokens.{kind}_ms.{stat}", f"{label} {stat_label} (ms)",
                   f"{kind} {stat_label} ms", "ms", "lower",
                   f"{kind}_{stat}_ms" if kind in ("ttft", "itl") and stat in TOKEN_WINDOW_STATS else None)
            for kind, label in TOKEN_LATENCIES.items() for stat, stat_label in TOKEN_STATS.items()]


FIGURES: dict[str, Figure] = {f.name: f for f in [
    Figure("ok_rps", "ok_rps", "successful req/s", "ok req/s", "req/s", "higher", "ok_rps", "mean"),
    Figure("rps", "rps", "req/s (sent)", "req/s", "req/s", "higher", "rps", "mean"),
    _latency("p50_ms", "p50", "p50"),
    _latency("p90_ms", "p90", "p90"),
    _latency("p95_ms", "p95", "p95"),
    _latency("p99_ms", "p99", "p99"),
    _latency("p999_ms", "p999", "p99.9", window=False),
    _latency("max_ms", "max", "max"),
    _latency("mean_ms", "mean", "mean"),
    Figure("error_rate", "error_rate", "error rate", "error rate", "", "lower"),
    Figure("requests", "requests", "requests measured", "requests", "", None),
    Figure("errors", "errors", "errors", "errors", "", "lower"),
    Figure("server_cpu_percent", "server.cpu_percent_mean", "server CPU % (mean)", "server cpu %", "%", None),
    Figure("generator_cpu_percent", "generator.cpu_percent_mean", "generator CPU % (mean)", "gen cpu %", "%",
           None),
    Figure("system_cpu_percent", "system_cpu_percent_mean", "system CPU % (mean, all cores)", "system cpu %",
           "%", None),
    Figure("req_per_cpu_s", None, "requests per server CPU-second", "req/cpu-s", "", "higher"),
    Figure("saturation_rps", "knee.saturation_rps", "saturation req/s (best level of a ramp)", "saturation",
           "req/s", "higher"),
    Figure("knee_users", "knee.knee_users", "knee (users, closed-model ramp)", "knee users", "users", "higher"),
    Figure("knee_rps", "knee.knee_rps", "knee (req/s, open-model ramp)", "knee req/s", "req/s", "higher"),
    Figure("soak_verdict", "soak.verdict", "soak verdict", "soak", "", None,
           words=("stable", "drifting", "leaking")),
    Figure("rss_growth_mb_per_h", "soak.rss_mb_per_hour", "server RSS growth over a soak (MB/h)", "rss MB/h",
           "MB/h", "lower"),
    Figure("p50_drift", "soak.p50_drift", "p50 drift over a soak (fraction of its start)", "p50 drift", "",
           "lower"),
    Figure("p99_drift", "soak.p99_drift", "p99 drift over a soak (fraction of its start)", "p99 drift", "",
           "lower"),
    Figure("gpu_utilization_percent", "gpu.utilization_percent_mean", "GPU utilization % (mean over devices)",
           "gpu util %", "%", None),
    Figure("gpu_memory_peak_mb", "gpu.memory_used_mb_peak", "GPU memory used, peak of any device (MB)", "gpu MB",
           "MB", "lower"),
    Figure("capacity_rps", "capacity_rps", "capacity (last passing req/s of a capacity search)", "capacity",
           "req/s", "higher"),
    *_token_latencies(),
    Figure("output_tokens_per_s", "tokens.output_tokens_per_s", "output tokens/s", "out tok/s", "tok/s", "higher",
           "output_tokens_per_s", "mean"),
    Figure("input_tokens_per_s", "tokens.input_tokens_per_s", "input tokens/s", "in tok/s", "tok/s", "higher"),
    Figure("goodput_rps", "goodput.rps", "goodput (req/s meeting every SLO)", "goodput", "req/s", "higher"),
    Figure("goodput_fraction", "goodput.fraction", "share of requests meeting every SLO", "good share", "",
           "higher"),
]}

# figures a threshold or rank_by may name: those stored in summary.json
IN_SUMMARY = tuple(name for name, f in FIGURES.items() if f.path is not None)
# figures a capacity search's result carries (capacity.json), judged by a capacity scenario's thresholds
CAPACITY = ("capacity_rps",)
RANKABLE = tuple(name for name in IN_SUMMARY if FIGURES[name].better is not None and name not in CAPACITY)


def canonical(name: str) -> str:
    """A figure name as the registry spells it: the dotted forms `ttft_ms.p99` (summary.json's
    own path) and `e2e_ms.p95` (E2E is the request latency) read as `ttft_p99_ms` and `p95_ms`."""
    family, dot, stat = name.partition(".")
    if not dot or not family.endswith("_ms"):
        return name
    kind = family[:-3]
    if kind in ("e2e", "latency"):
        return f"{stat}_ms"
    return f"{kind}_{stat}_ms" if kind in TOKEN_LATENCIES else name


def lookup(doc: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a nested mapping (None when any part is missing)."""
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def value(summary: Mapping[str, Any], name: str) -> float | None:
    """A figure's value in a summary (None when the summary lacks it)."""
    path = FIGURES[name].path
    found = lookup(summary, path) if path is not None else None
    return found if isinstance(found, (int, float)) and not isinstance(found, bool) else None


def word(summary: Mapping[str, Any], name: str) -> str | None:
    """A verdict figure's word in a summary (None when the summary lacks it)."""
    path = FIGURES[name].path
    found = lookup(summary, path) if path is not None else None
    return found if isinstance(found, str) else None


def is_better(name: str, a: float, b: float) -> bool:
    """a is strictly better than b on this figure (False for figures without a direction)."""
    better = FIGURES[name].better
    return (a > b) if better == "higher" else (a < b) if better == "lower" else False
