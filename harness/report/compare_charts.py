"""Matplotlib figures overlaying several runs for the comparison page (base64 PNG)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.runfolder import RunAnalysis
from harness.report.plotting import STYLE, TIME_LABEL, headroom, log_if_wide, new_figure, png

PALETTE = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#bf3989", "#1b7c83", "#6e7781"]


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def names(labels: list[str]) -> list[str]:
    """Tick labels: the run labels when short, else run 1, run 2, ... (the legends name them)."""
    return labels if max(map(len, labels)) <= 18 else [f"run {i + 1}" for i in range(len(labels))]


@STYLE
def latency_throughput(analyses: list[RunAnalysis], labels: list[str]) -> str:
    """p95 against successful req/s: one faint dot per measured second, one big dot per stage."""
    fig = new_figure(5.0)
    ax = fig.subplots()
    p95s = []
    for i, (ra, label) in enumerate(zip(analyses, labels)):
        seconds = ra.measured[ra.measured["requests"] > 0]
        ax.scatter(seconds["ok_rps"], seconds["p95_ms"], s=9, alpha=0.35, color=color(i))
        stages = [(st["ok_rps"], st["latency_ms"]["p95"]) for st in ra.summary["stages"]
                  if st["latency_ms"]["p95"] is not None]
        if stages:
            xs, ys = zip(*sorted(stages))
            ax.plot(xs, ys, "o-", ms=8, lw=1.5, color=color(i), label=f"{label} (big dots: stages)")
        p95s.append(seconds["p95_ms"].to_numpy(dtype=float))
    log_if_wide(ax, np.concatenate(p95s) if p95s else [])
    ax.set_xlabel("successful req/s")
    ax.set_ylabel("p95 latency (ms)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_xlim(left=0)
    ax.set_title("Latency vs throughput: small dots are seconds, big dots the measured stages "
                 "(lower and further right is better)", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)


@STYLE
def bars(frame: pd.DataFrame) -> str:
    fig = new_figure(4.4)
    lat, thr = fig.subplots(1, 2, width_ratios=[1.6, 1])
    n, keys = len(frame), ["p50_ms", "p95_ms", "p99_ms"]
    width = 0.8 / n
    x = np.arange(len(keys))
    for i, row in frame.reset_index(drop=True).iterrows():
        values = [float(row[k]) if pd.notna(row[k]) else 0.0 for k in keys]
        bars_ = lat.bar(x + (i - (n - 1) / 2) * width, values, width, color=color(int(i)), label=row["label"])
        lat.bar_label(bars_, fmt="%.3g", fontsize=8, padding=2)
    lat.set_xticks(x, ["p50", "p95", "p99"])
    lat.set_ylabel("latency (ms)")
    lat.set_title("Latency percentiles (lower is better)", loc="left")
    headroom(lat, 1.35)
    lat.legend(loc="upper left", fontsize=8)
    rps = [float(v) if pd.notna(v) else 0.0 for v in frame["ok_rps"]]
    positions = np.arange(n)
    bars_ = thr.bar(positions, rps, color=[color(i) for i in range(n)])
    thr.bar_label(bars_, fmt="%.0f", fontsize=8, padding=2)
    thr.set_xticks(positions, names(list(frame["label"])))
    thr.set_ylabel("successful req/s")
    thr.set_title("Throughput (higher is better)", loc="left")
    headroom(thr, 1.2)
    return png(fig)


@STYLE
def timelines(analyses: list[RunAnalysis], labels: list[str]) -> str:
    fig = new_figure(6.4)
    rate, lat = fig.subplots(2, 1, sharex=True)
    for i, (ra, label) in enumerate(zip(analyses, labels)):
        x = ra.win["t"] + 0.5
        rate.plot(x, ra.win["ok_rps"], color=color(i), lw=1.3, label=label)
        lat.plot(x, ra.win["p95_ms"], color=color(i), lw=1.3, label=label)
    rate.set_ylabel("successful req/s")
    rate.set_ylim(bottom=0)
    rate.set_title("Throughput per second", loc="left")
    rate.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    log_if_wide(lat, np.concatenate([ra.win["p95_ms"].to_numpy(dtype=float) for ra in analyses]))
    lat.set_ylabel("p95 latency (ms)" + (", log scale" if lat.get_yscale() == "log" else ""))
    lat.set_xlabel(TIME_LABEL)
    lat.set_title("p95 latency per second", loc="left")
    for ax in (rate, lat):
        warmup = max(ra.warmup for ra in analyses)
        if warmup > 0:
            ax.axvspan(0, warmup, color="#8c959f", alpha=0.15, lw=0)
    return png(fig)


@STYLE
def efficiency(analyses: list[RunAnalysis], frame: pd.DataFrame) -> str:
    fig = new_figure(4.2)
    bar_ax, cpu = fig.subplots(1, 2, width_ratios=[1, 1.6])
    n = len(analyses)
    values = [float(v) if pd.notna(v) else 0.0 for v in frame["req_per_cpu_s"]]
    bars_ = bar_ax.bar(np.arange(n), values, color=[color(i) for i in range(n)])
    bar_ax.bar_label(bars_, fmt="%.0f", fontsize=8, padding=2)
    bar_ax.set_xticks(np.arange(n), names(list(frame["label"])))
    bar_ax.set_ylabel("requests per server CPU-second")
    bar_ax.set_title("Server efficiency (higher is better)", loc="left")
    headroom(bar_ax, 1.2)
    for i, (ra, label) in enumerate(zip(analyses, frame["label"])):
        cpu.plot(ra.series["t"], ra.series["server_cpu"], color=color(i), lw=1.2, label=label)
    cpu.set_ylabel("server CPU % (100 = one core)")
    cpu.set_xlabel(TIME_LABEL)
    cpu.set_ylim(bottom=0)
    cpu.set_title("Server CPU over time (master + workers)", loc="left")
    headroom(cpu, 1.3)
    cpu.legend(loc="upper left", fontsize=8)
    return png(fig)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher x, lower y), by x."""
    front = []
    for i, (x, y) in enumerate(points):
        if not any((ox >= x and oy <= y) and (ox, oy) != (x, y) for ox, oy in points):
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


@STYLE
def token_pareto(analyses: list[RunAnalysis], labels: list[str]) -> str | None:
    """Each generative run as TTFT p95 against output tokens/s (big dots, the measured window;
    small dots its seconds), and the Pareto front of the runs: the configurations no other beats
    on both latency and throughput."""
    fig = new_figure(5.0)
    ttft_ax, itl_ax = fig.subplots(1, 2)
    drawn = False
    for ax, key, seconds_key, label in ((ttft_ax, "ttft_ms", "ttft_p50_ms", "TTFT p95"),
                                        (itl_ax, "itl_ms", "itl_p50_ms", "ITL p95")):
        points = []
        for i, (ra, run_label) in enumerate(zip(analyses, labels)):
            tokens = ra.summary.get("tokens") or {}
            if ra.tokens is None or not tokens:
                continue
            measured = ra.tokens.win[(ra.tokens.win["t"] >= ra.warmup) & (ra.tokens.win["t"] < ra.until)]
            ax.scatter(measured["output_tokens_per_s"], measured[seconds_key], s=8, alpha=0.3, color=color(i))
            rate, latency = tokens.get("output_tokens_per_s"), (tokens.get(key) or {}).get("p95")
            if rate is None or latency is None:
                continue
            ax.plot([rate], [latency], "o", ms=9, color=color(i), label=run_label)
            points.append((float(rate), float(latency)))
            drawn = True
        front = pareto_front(points)
        if len(front) > 1:
            ax.plot([points[k][0] for k in front], [points[k][1] for k in front], "--", color="#57606a", lw=1,
                    label="Pareto front")
        ax.set_xlabel("output tokens/s")
        ax.set_ylabel(f"{label} (ms); small dots: p50 per second")
        ax.set_xlim(left=0)
        ax.set_title(f"{label} vs output tokens/s", loc="left")
    if not drawn:
        return None
    fig.suptitle("Token latency against token throughput, one big dot per run (lower right is better)",
                 x=0.0, ha="left", fontweight="bold")
    itl_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)
