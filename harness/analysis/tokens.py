"""Token figures of a generative run, exact from the raw rows and every inter-token gap.

Definitions follow vLLM's `benchmarks/benchmark_serving.py` (and aiperf's), timed from each
request's intended send time as every latency here is:
- TTFT, time to first token: first token chunk (reasoning included) - intended send;
- TTFC, time to first content token: the same for the first chunk of content proper;
- TPOT, time per output token: (end - first token) / (output tokens - 1), per request with more
  than one output token;
- ITL, inter-token latency: every gap between consecutive token chunks, over all requests
  (percentiles of all gaps, not a mean of per-request means);
- E2E: end - intended send (latency_ms elsewhere);
- output and input tokens/s: tokens of the successful requests ÷ the window's length;
- goodput: successful requests meeting every objective of `goodput:` per second, and as a
  fraction of the requests sent.
Only successful requests count, as in vLLM; failed streams keep their tokens in the side file.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.stats import latency_stats
from harness.analysis.windows import grouped_quantiles
from harness.results.samples import NOT_SENT

STATS = ("p50", "p90", "p95", "p99", "max", "mean")


def _stats(values_ms: np.ndarray) -> dict[str, float | None]:
    found = latency_stats(values_ms)
    return {k: found[k] for k in STATS}


def per_request(streams: pd.DataFrame) -> pd.DataFrame:
    """TTFT, TTFC, TPOT and E2E (ms) of each successful request, with its token counts."""
    ok = streams[streams["error"].fillna("") == ""]
    intended = ok["intended"].to_numpy(dtype=np.float64)
    end = ok["end"].to_numpy(dtype=np.float64)
    first = ok["first_token"].to_numpy(dtype=np.float64)
    out_tokens = ok["output_tokens"].astype("float64").to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out_tokens > 1, (end - first) / (out_tokens - 1) * 1000.0, np.nan)
    return pd.DataFrame({"intended": intended,
                         "ttft_ms": (first - intended) * 1000.0,
                         "ttfc_ms": (ok["first_content"].to_numpy(dtype=np.float64) - intended) * 1000.0,
                         "tpot_ms": tpot,
                         "e2e_ms": (end - intended) * 1000.0,
                         "output_tokens": out_tokens,
                         "input_tokens": ok["input_tokens"].astype("float64").to_numpy()},
                        index=ok.index)


def meets(requests: pd.DataFrame, slo: dict[str, float | None]) -> pd.Series:
    """Which requests meet every objective given (a missing figure, e.g. TPOT of a one-token
    answer, does not fail the objective it cannot be judged by)."""
    met = pd.Series(True, index=requests.index)
    for key in ("ttft_ms", "tpot_ms", "e2e_ms"):
        limit = slo.get(key)
        if limit is not None:
            values = requests[key]
            met &= values.isna() | (values <= limit)
    return met


def token_figures(streams: pd.DataFrame, samples: pd.DataFrame, seconds: float,
                  slo: dict[str, float | None] | None) -> dict[str, Any]:
    """The `tokens` (and, with objectives, `goodput`) blocks of one window: `streams` are its
    streamed requests (results.tokens.read_streams), `samples` all its rows."""
    requests = per_request(streams)
    ok = streams.loc[requests.index]
    gaps = np.concatenate(list(ok["gaps"])) if len(ok) else np.zeros(0)
    counted = set(ok["counted_by"].dropna().astype(str))
    out_tokens = float(np.nansum(requests["output_tokens"]))
    in_tokens = requests["input_tokens"]
    figures: dict[str, Any] = {"tokens": {
        "ttft_ms": _stats(requests["ttft_ms"].dropna().to_numpy()),
        "ttfc_ms": _stats(requests["ttfc_ms"].dropna().to_numpy()),
        "tpot_ms": _stats(requests["tpot_ms"].dropna().to_numpy()),
        "itl_ms": _stats(gaps),
        "output_tokens": int(out_tokens),
        "input_tokens": int(np.nansum(in_tokens)) if in_tokens.notna().any() else None,
        "output_tokens_per_s": round(out_tokens / seconds, 3) if seconds > 0 else None,
        "input_tokens_per_s": (round(float(np.nansum(in_tokens)) / seconds, 3)
                               if seconds > 0 and in_tokens.notna().any() else None),
        "output_tokens_per_request": round(out_tokens / len(requests), 3) if len(requests) else None,
        "counted_by": counted.pop() if len(counted) == 1 else "mixed" if counted else None,
    }}
    if slo is not None:
        sent = int((samples["error"] != NOT_SENT).sum())
        good = int(meets(requests, slo).sum())
        figures["goodput"] = {"slo": {k: v for k, v in slo.items() if v is not None},
                              "requests": good,
                              "rps": round(good / seconds, 3) if seconds > 0 else None,
                              "fraction": round(good / sent, 6) if sent else None}
    return figures


def token_windows(streams: pd.DataFrame, until: float, width: float = 1.0,
                  slo: dict[str, float | None] | None = None, start: float = 0.0) -> pd.DataFrame:
    """Per window [t, t + width) from `start` to `until`: TTFT and ITL p50/p95/p99 (requests by intended
    send time, their gaps with them), output tokens/s by arrival (each token chunk at the time it
    came, carrying its request's tokens ÷ chunks, whenever its request was sent), successful
    streamed requests/s and, with
    objectives, goodput_rps."""
    count = max(int(np.ceil((until - start) / width - 1e-9)), 1)
    t = start + np.arange(count) * width
    inside = (streams["intended"] >= start) & (streams["intended"] < start + count * width)
    requests = per_request(streams[inside])
    ok = streams.loc[requests.index]
    slot = np.clip(((requests["intended"].to_numpy() - start) // width).astype(np.int64), 0, count - 1)
    out = pd.DataFrame({"t": t})
    ttft = requests["ttft_ms"].to_numpy()
    keep = np.isfinite(ttft)
    out["ttft_p50_ms"], out["ttft_p95_ms"], out["ttft_p99_ms"] = grouped_quantiles(
        slot[keep], ttft[keep], count, (0.5, 0.95, 0.99))
    gap_slot = np.repeat(slot, [len(g) for g in ok["gaps"]]) if len(ok) else np.zeros(0, dtype=np.int64)
    gaps = np.concatenate(list(ok["gaps"])) if len(ok) else np.zeros(0)
    out["itl_p50_ms"], out["itl_p95_ms"], out["itl_p99_ms"] = grouped_quantiles(gap_slot, gaps, count,
                                                                                 (0.5, 0.95, 0.99))
    # by arrival: the tokens of every stream that came in the window, its request sent before `start`
    # (a stream begun in the warm-up) or not, so the first windows are not short of tokens
    arrivals, weights = token_arrivals(streams.loc[per_request(streams).index] if not inside.all() else ok)
    counts, _ = np.histogram(arrivals, bins=np.append(t, start + count * width), weights=weights)
    out["output_tokens_per_s"] = counts / width
    out["ok_streams_per_s"] = np.bincount(slot, minlength=count)[:count] / width
    if slo is not None:
        good = meets(requests, slo).to_numpy()
        out["goodput_rps"] = np.bincount(slot[good], minlength=count)[:count] / width
    return out


def token_arrivals(ok: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """When each token chunk arrived (s, the run's clock) and how many tokens it stands for."""
    times, weights = [], []
    for first, gaps, tokens in zip(ok["first_token"], ok["gaps"], ok["output_tokens"].astype("float64")):
        if np.isnan(first):
            continue
        arrived = first + np.concatenate([[0.0], np.cumsum(gaps) / 1000.0])
        times.append(arrived)
        weights.append(np.full(arrived.size, (tokens if np.isfinite(tokens) else arrived.size) / arrived.size))
    if not times:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(times), np.concatenate(weights)

