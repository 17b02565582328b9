"""Matplotlib figures of one run (Agg backend), each returned as a base64 PNG for inline HTML."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from harness.analysis import server_metrics, trends
from harness.analysis.runfolder import RunAnalysis
from harness.analysis.windows import little_sides
from harness.report.plotting import STYLE, TIME_LABEL, headroom, log_if_wide, mark_stages, new_figure, plain_log, png

LAT = {"p50_ms": ("p50", "#0969da"), "p90_ms": ("p90", "#1a7f37"), "p95_ms": ("p95", "#bf8700"),
       "p99_ms": ("p99", "#cf222e"), "max_ms": ("max", "#8250df")}
ERROR_COLORS = ["#cf222e", "#fb8f44", "#8250df", "#bf3989", "#6e7781", "#9a6700", "#0550ae", "#116329"]
MAX_LEGEND = 6


def _mid(win: pd.DataFrame) -> np.ndarray:
    return win["t"].to_numpy() + 0.5


@STYLE
def load_chart(ra: RunAnalysis) -> str:
    """Offered vs achieved load, in flight, and errors by kind per second, stages marked."""
    win, closed = ra.win, ra.summary["load_model"] == "closed"
    fig = new_figure(5.6)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1.2])
    x = _mid(win)
    top.plot(x, win["rps"], color="#0969da", lw=1.6, label="achieved (sent) req/s")
    top.plot(x, win["ok_rps"], color="#1a7f37", lw=1.0, ls=":", label="successful req/s")
    right = top.twinx() if closed else top
    if closed:
        right.spines["right"].set_visible(True)
        right.grid(False)
        right.set_ylabel("users / requests in flight")
    if win["offered"].notna().any():
        right.plot(x, win["offered"], color="#bf8700", lw=1.6, ls="--",
                   label="planned users" if closed else "offered (planned) req/s")
    right.plot(x, win["in_flight"], color="#8250df", lw=1.0, alpha=0.8, label="requests in flight (mean)")
    top.set_ylabel("requests / second")
    top.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    top.set_title(f"Load: {'planned users' if closed else 'offered'} vs achieved, per second "
                  f"({ra.summary['load_model']} model)", loc="left", pad=14)
    handles = [h for a in ((top, right) if closed else (top,)) for h in a.get_legend_handles_labels()[0]]
    fig.legend(handles=handles, loc="outside lower center", ncol=4)
    mark_stages(top, ra.plan, ra.warmup)

    kinds = [c for c in win.columns if c.startswith("errors_")] + (["not_sent"] if win["not_sent"].any() else [])
    base = np.zeros(len(win))
    for color, column in zip(ERROR_COLORS, kinds):
        values = win[column].to_numpy(dtype=float)
        bottom.bar(x, values, width=1.0, bottom=base, color=color, label=column.removeprefix("errors_"))
        base += values
    if kinds:
        bottom.legend(loc="upper left", ncol=len(kinds), title="errors by kind")
    else:
        bottom.text(0.5, 0.5, "no errors in this run", transform=bottom.transAxes, ha="center", va="center",
                    color="#1a7f37")
    bottom.set_ylabel("errors / second")
    bottom.set_xlabel(TIME_LABEL)
    mark_stages(bottom, ra.plan, ra.warmup, labels=False)
    return png(fig)


@STYLE
def latency_chart(ra: RunAnalysis) -> str:
    win = ra.win
    fig = new_figure(4.4)
    ax = fig.subplots()
    for column, (label, color) in LAT.items():
        ax.plot(_mid(win), win[column], color=color, lw=1.8 if column == "p50_ms" else 1.1, label=label)
    log_if_wide(ax, win[list(LAT)].to_numpy())
    ax.set_ylabel("latency (ms)" + (", log scale" if ax.get_yscale() == "log" else ""))
    ax.set_xlabel(TIME_LABEL)
    ax.set_title("Latency percentiles per second (from the intended send time)", loc="left", pad=14)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    mark_stages(ax, ra.plan, ra.warmup)
    return png(fig)


PERCENTILE_TICKS = [(2, "50%"), (10, "90%"), (100, "99%"), (1e3, "99.9%"), (1e4, "99.99%"),
                    (1e5, "99.999%"), (1e6, "99.9999%")]


@STYLE
def spectrum_chart(ra: RunAnalysis) -> str | None:
    spectrum, (counts, edges, log) = ra.spectrum, ra.histogram
    if spectrum.empty:
        return None
    fig = new_figure(4.4)
    left, right = fig.subplots(1, 2, width_ratios=[1.15, 1])
    left.plot(spectrum["inverse_tail"], spectrum["latency_ms"], color="#0969da", lw=1.8)
    left.set_xscale("log")
    top = spectrum["inverse_tail"].max()
    ticks = [(x, label) for x, label in PERCENTILE_TICKS if x <= top * 1.0001]
    left.set_xticks([x for x, _ in ticks], [label for _, label in ticks])
    left.minorticks_off()
    lat = ra.summary["latency_ms"]
    for key, x, color in (("p50", 2, "#0969da"), ("p99", 100, "#cf222e"), ("p999", 1000, "#8250df")):
        if lat.get(key) is not None and x <= top:
            left.plot([x], [lat[key]], "o", color=color, label=f"{key.replace('p999', 'p99.9')} = {lat[key]:.3g} ms")
    log_if_wide(left, spectrum["latency_ms"], ratio=50)
    left.set_xlabel("percentile (log scale of 1/(1-p))")
    left.set_ylabel("latency (ms)")
    left.set_title("Latency by percentile (measured window)", loc="left")
    left.legend(loc="upper left")
    right.stairs(counts, edges, fill=True, color="#54aeff", alpha=0.8)
    if log:
        right.set_xscale("log")
        plain_log(right.xaxis)
    for key, color in (("p50", "#0969da"), ("p99", "#cf222e")):
        if lat.get(key) is not None:
            right.axvline(lat[key], color=color, ls="--", lw=1, label=f"{key} {lat[key]:.3g} ms")
    right.set_xlabel("latency (ms)" + (", log scale" if log else ""))
    right.set_ylabel("requests")
    right.set_title("Latency histogram", loc="left")
    right.legend(loc="upper right")
    return png(fig)


def _per_process(ax: Axes, rows: pd.DataFrame, value: str, prefix: str, scale: float = 1.0) -> None:
    for n, (pid, g) in enumerate(rows.groupby("pid", sort=False)):
        ax.plot(g["t"], g[value] * scale, lw=1.0, label=f"{prefix} {pid}" if n < MAX_LEGEND else None)


def _generator_cpu(ax: Axes, res: pd.DataFrame, series: pd.DataFrame) -> None:
    _per_process(ax, res[res["role"] == "generator"], "cpu_percent", "generator")
    ax.plot(series["t"], series["harness_cpu"], color="#6e7781", lw=1.0, label="harness")
    ax.axhline(90, color="#cf222e", ls=":", lw=1, label="validity limit (90%)")
    ax.set_title("Load generator CPU", loc="left", pad=14)
    ax.set_ylabel("CPU % (100 = one core)")


def _finish(ra: RunAnalysis, axes: list[Axes], labelled: list[Axes], bottom: list[Axes]) -> None:
    for ax in axes:
        mark_stages(ax, ra.plan, ra.warmup, labels=ax in labelled)
        ax.set_ylim(bottom=0)
        if ax.get_legend_handles_labels()[0]:
            headroom(ax, 1.35)
            ax.legend(loc="upper right", fontsize=8, ncol=2)
    for ax in bottom:
        ax.set_xlabel(TIME_LABEL)


@STYLE
def resources_chart(ra: RunAnalysis) -> str | None:
    """Server CPU and RSS per process, generator CPU, and server efficiency over time; only the
    generator when the harness did not start the server (nothing to measure on its side)."""
    res, series = ra.resources, ra.series
    if series.empty:
        return None
    workers, master = res[res["role"] == "server_worker"], res[res["role"] == "server"]
    if workers.empty and master.empty:
        fig = new_figure(3.6)
        gen = fig.subplots()
        _generator_cpu(gen, res, series)
        _finish(ra, [gen], [gen], [gen])
        return png(fig)
    fig = new_figure(7.4)
    (cpu, mem), (gen, eff) = fig.subplots(2, 2, sharex=True)
    _per_process(cpu, workers, "cpu_percent", "worker")
    cpu.plot(series["t"], series["server_cpu"], color="black", lw=1.4, ls="--", label="server total")
    cpu.set_title("Server CPU per worker", loc="left", pad=14)
    cpu.set_ylabel("CPU % (100 = one core)")
    _per_process(mem, workers, "rss_bytes", "worker", 1 / 2**20)
    _per_process(mem, master, "rss_bytes", "master", 1 / 2**20)
    mem.set_title("Server memory (RSS) per process", loc="left", pad=14)
    mem.set_ylabel("RSS (MB)")
    _generator_cpu(gen, res, series)
    five = ra.win.assign(k=(ra.win["t"] // 5).astype(int)).groupby("k")[["t", "requests", "server_cpu_s"]]
    per5 = five.agg({"t": "min", "requests": "sum", "server_cpu_s": "sum"})
    per5 = per5[per5["server_cpu_s"] > 0]
    eff.plot(per5["t"] + 2.5, per5["requests"] / per5["server_cpu_s"], color="#1a7f37", marker="o", ms=3)
    eff.set_title("Server efficiency (5 s windows)", loc="left", pad=14)
    eff.set_ylabel("requests per server CPU-second")
    _finish(ra, [cpu, mem, gen, eff], [cpu, mem], [gen, eff])
    return png(fig)


@STYLE
def gpu_chart(ra: RunAnalysis) -> str | None:
    """GPU utilization and memory per device on the run's clock, under the latency they served."""
    if ra.gpu.empty:
        return None
    devices = ra.gpu[ra.gpu["pid"].isna()]
    if devices.empty:
        return None
    fig = new_figure(7.4)
    lat, util, mem = fig.subplots(3, 1, sharex=True)
    lat.plot(_mid(ra.win), ra.win["p95_ms"], color="#cf222e", lw=1.2, label="p95")
    lat.plot(_mid(ra.win), ra.win["p50_ms"], color="#0969da", lw=1.2, label="p50")
    lat.set_ylabel("latency (ms)")
    lat.set_title("Latency per second", loc="left", pad=14)
    for index, rows in devices.groupby("gpu"):
        util.plot(rows["t"], rows["utilization_percent"], lw=1.2, label=f"GPU {index}")
        mem.plot(rows["t"], rows["memory_used_bytes"] / 2**20, lw=1.2, label=f"GPU {index}")
    util.set_ylabel("utilization %")
    util.set_title("GPU utilization (NVML, every 0.5 s)", loc="left", pad=14)
    mem.set_ylabel("memory used (MB)")
    mem.set_title("GPU memory used", loc="left", pad=14)
    _finish(ra, [lat, util, mem], [lat], [mem])
    return png(fig)


@STYLE
def timing_chart(ra: RunAnalysis) -> str | None:
    """Mean latency per second split into generator wait, server queue, inference and the rest."""
    win = ra.win
    if not win["srv_infer_ms"].notna().any():
        return None
    fig = new_figure(4.2)
    ax = fig.subplots()
    parts = [("send_wait_ms", "waiting to be sent (generator)", "#d0d7de"),
             ("srv_queue_ms", "server queue (lock / batcher)", "#fb8f44"),
             ("srv_infer_ms", "inference (model forward)", "#0969da"),
             ("srv_other_ms", "the rest: HTTP, parsing, network, backlog", "#54aeff")]
    ax.stackplot(_mid(win), *[win[c].fillna(0.0).clip(lower=0.0) for c, _, _ in parts],
                 labels=[label for _, label, _ in parts], colors=[c for _, _, c in parts], alpha=0.9)
    ax.plot(_mid(win), win["mean_ms"], color="black", lw=1.0, ls="--", label="client mean latency")
    ax.set_ylabel("mean latency (ms)")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylim(bottom=0)
    ax.set_title("Where the time goes (Server-Timing header), mean per second", loc="left", pad=14)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    mark_stages(ax, ra.plan, ra.warmup)
    return png(fig)


@STYLE
def knee_chart(ra: RunAnalysis) -> str | None:
    if ra.knee is None:
        return None
    levels, unit = ra.knee["levels"], ra.knee["unit"]
    fig = new_figure(4.6)
    left, right = fig.subplots(1, 2)
    left.plot(levels["offered"], levels["p95_ms"], "o-", color="#cf222e", label="p95 (median of its seconds)")
    log_if_wide(left, levels["p95_ms"], ratio=5)
    log_if_wide(left, levels["offered"], ratio=10, axis="x")
    left.set_xlabel(f"offered load ({unit})" + (", log scale" if left.get_xscale() == "log" else ""))
    left.set_ylabel("p95 latency (ms)")
    thr = left.twinx()
    thr.spines["right"].set_visible(True)
    thr.grid(False)
    thr.plot(levels["offered"], levels["ok_rps"], "s-", color="#1a7f37", label="successful req/s")
    thr.set_ylabel("successful req/s")
    thr.set_ylim(bottom=0)
    for key, color, label in (("knee", "#1a7f37", "knee"), ("bend", "#cf222e", "bent")):
        if ra.knee[key] is not None:
            left.axvline(ra.knee[key]["offered"], color=color, ls="--", lw=1.2, label=label)
    handles = left.get_legend_handles_labels()[0] + thr.get_legend_handles_labels()[0]
    fig.legend(handles=handles, loc="outside lower left", ncol=4)
    left.set_title("Latency and throughput by load level", loc="left")
    measured = ra.measured[ra.measured["requests"] > 0]
    points = right.scatter(measured["ok_rps"], measured["p95_ms"], c=measured["offered"], cmap="viridis", s=14)
    fig.colorbar(points, ax=right, label=f"offered load ({unit})")
    log_if_wide(right, measured["p95_ms"])
    right.set_xlabel("successful req/s (per second)")
    right.set_ylabel("p95 latency (ms)")
    right.set_title("Latency vs throughput, one dot per second", loc="left")
    return png(fig)


@STYLE
def little_chart(ra: RunAnalysis) -> str:
    win, closed = ra.win, ra.summary["load_model"] == "closed"
    planned, measured = little_sides(win, ra.summary["load_model"])
    fig = new_figure(3.4)
    ax = fig.subplots()
    ax.plot(_mid(win), planned, color="#bf8700", lw=1.8,
            label="L planned: users" if closed else "λ planned x W measured")
    ax.plot(_mid(win), measured, color="#8250df", lw=1.0, ls="--",
            label="λ·W measured: req/s x mean time" if closed else "L measured: requests in the system")
    ax.set_ylabel("requests in the system")
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylim(bottom=0)
    ax.set_title("Little's law per second (L = λ·W): the two lines should coincide", loc="left", pad=14)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    mark_stages(ax, ra.plan, ra.warmup)
    return png(fig)


@STYLE
def prometheus_chart(ra: RunAnalysis) -> str | None:
    """What the target's /metrics said, next to the client's view of the same seconds."""
    m = ra.metrics
    status = server_metrics.counter_rates(m, "inference_requests_total", "status")
    if m.empty or status.empty:
        return None
    fig = new_figure(7.2)
    (req, dur), (batch, dist) = fig.subplots(2, 2)
    for column in status.columns:
        req.plot(status.index, status[column], lw=1.4, label=f"server: status {column}")
    req.plot(_mid(ra.win), ra.win["rps"], color="black", ls="--", lw=1.0, label="client: sent req/s")
    req.set_ylabel("requests / second")
    req.set_title("Requests by status (server counter vs client)", loc="left", pad=14)
    series = {label: (server_metrics.histogram_means(m, base, 1000.0), color) for base, label, color in (
        ("inference_request_duration_seconds", "server: whole handler", "#8250df"),
        ("inference_queue_duration_seconds", "server: queue", "#fb8f44"),
        ("inference_compute_duration_seconds", "server: compute", "#0969da"))}
    series = {label: sc for label, sc in series.items() if sc[0].notna().any()}
    log_if_wide(dur, np.concatenate([ra.win["service_ms"].to_numpy(dtype=float)]
                                    + [means.to_numpy(dtype=float) for means, _ in series.values()]))
    for label, (means, color) in series.items():
        hidden = dur.get_yscale() == "log" and not (means > 0).any()
        dur.plot(means.index, means, lw=1.3, color=color, label=label + (" (always 0)" if hidden else ""))
    dur.plot(_mid(ra.win), ra.win["service_ms"], color="black", ls="--", lw=1.0, label="client: service time")
    dur.set_ylabel("mean per interval (ms)" + (", log scale" if dur.get_yscale() == "log" else ""))
    dur.set_title("Queue vs compute time (server) and client latency", loc="left", pad=14)
    rows = server_metrics.histogram_means(m, "inference_batch_rows")
    if rows.notna().any():
        batch.plot(rows.index, rows, color="#1a7f37", lw=1.4, label="mean rows per forward")
        batch.legend(loc="upper right", fontsize=8)
    batch.set_ylabel("rows per forward")
    batch.set_ylim(bottom=0)
    batch.set_xlabel(TIME_LABEL)
    batch.set_title("Batch size over time", loc="left", pad=14)
    counts = server_metrics.histogram_counts(m, "inference_batch_rows")
    if counts.sum() > 0:
        labels = [f"≤{b:g}" if np.isfinite(b) else f">{counts.index[-2]:g}" for b in counts.index]
        dist.bar(range(len(counts)), counts.to_numpy(), color="#1a7f37", tick_label=labels)
        dist.tick_params(axis="x", labelsize=8)
    else:
        dist.text(0.5, 0.5, "no batch metrics", transform=dist.transAxes, ha="center", va="center")
    dist.set_xlabel("rows per forward (bucket)")
    dist.set_ylabel("requests")
    dist.set_title("Batch size distribution (whole run)", loc="left", pad=14)
    for ax in (req, dur, batch):
        mark_stages(ax, ra.plan, ra.warmup, labels=False)
        headroom(ax, 1.35)
    req.legend(loc="upper right", fontsize=8, ncol=2)
    dur.legend(loc="best", fontsize=8, ncol=2)
    return png(fig)


@STYLE
def soak_chart(ra: RunAnalysis) -> str | None:
    if ra.soak is None:
        return None
    soak = ra.soak
    fig = new_figure(4.2)
    lat, mem = fig.subplots(1, 2)
    chunks, fits = soak["chunks"], soak["fits"]
    width = float(np.diff(chunks["t"].to_numpy()).min())
    x = chunks["t"].to_numpy() + width / 2
    for key, color in (("p50", "#0969da"), ("p99", "#cf222e")):
        lat.plot(x, chunks[f"{key}_ms"], "o", color=color, ms=4, label=f"{key} per {width:.0f} s window")
        lat.plot([x[0], x[-1]], [fits[key]["start"], fits[key]["end"]], color=color, lw=1.2, ls="--",
                 label=f"{key} trend ({trends.signed(soak[f'{key}_ms_per_hour'])} ms/h)")
    log_if_wide(lat, chunks[["p50_ms", "p99_ms"]].to_numpy())
    lat.set_ylabel("latency (ms)")
    lat.set_xlabel(TIME_LABEL)
    lat.set_title("Latency drift", loc="left")
    lat.legend(loc="upper left", fontsize=8)
    series = soak["series"]
    mem.plot(series["t"], series["server_rss_mb"], color="#8250df", lw=1.2, label="server RSS (all processes)")
    mem.plot([series["t"].iloc[0], series["t"].iloc[-1]], [fits["rss"]["start"], fits["rss"]["end"]],
             color="black", ls="--", lw=1.2, label=f"trend ({trends.signed(soak['rss_mb_per_hour'])} MB/h)")
    level, spread = float(series["server_rss_mb"].mean()), float(np.ptp(series["server_rss_mb"]))
    pad = max(0.05 * level, 10.0, spread * 0.6)  # a flat line must look flat, not like noise blown up
    mem.set_ylim(max(0.0, level - pad), level + pad)
    mem.set_ylabel("RSS (MB)")
    mem.set_xlabel(TIME_LABEL)
    mem.set_title(f"Server memory: {soak['verdict']}", loc="left")
    mem.legend(loc="lower right", fontsize=8)
    return png(fig)


@STYLE
def token_timing_chart(ra: RunAnalysis) -> str | None:
    """A generative run over time: TTFT and ITL percentiles per second, tokens/s and goodput."""
    if ra.tokens is None:
        return None
    win = ra.tokens.win
    fig = new_figure(7.2)
    ttft_ax, itl_ax, rate_ax = fig.subplots(3, 1, sharex=True, height_ratios=[2, 2, 1.6])
    x = _mid(win)
    for ax, kind, label in ((ttft_ax, "ttft", "TTFT"), (itl_ax, "itl", "ITL")):
        ax.plot(x, win[f"{kind}_p50_ms"], color="#0969da", lw=1.8, label=f"{label} p50")
        ax.plot(x, win[f"{kind}_p99_ms"], color="#cf222e", lw=1.1, label=f"{label} p99")
        log_if_wide(ax, win[[f"{kind}_p50_ms", f"{kind}_p99_ms"]].to_numpy())
        ax.set_ylabel(f"{label} (ms)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        mark_stages(ax, ra.plan, ra.warmup, labels=ax is ttft_ax)
    ttft_ax.set_title("Time to first token (by intended send) and inter-token latency, per second",
                      loc="left", pad=14)
    rate_ax.plot(x, win["output_tokens_per_s"], color="#1a7f37", lw=1.6, label="output tokens/s (by arrival)")
    rate_ax.set_ylabel("tokens / second")
    rate_ax.set_ylim(bottom=0)
    right = rate_ax.twinx()
    right.spines["right"].set_visible(True)
    right.grid(False)
    right.plot(x, win["ok_streams_per_s"], color="#8250df", lw=1.0, ls=":", label="successful streams/s")
    if "goodput_rps" in win:
        right.plot(x, win["goodput_rps"], color="#bf8700", lw=1.4, label="goodput (streams/s meeting the SLOs)")
    right.set_ylabel("streams / second")
    right.set_ylim(bottom=0)
    handles = rate_ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    rate_ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.06, 1.0))
    rate_ax.set_xlabel(TIME_LABEL)
    mark_stages(rate_ax, ra.plan, ra.warmup, labels=False)
    return png(fig)


@STYLE
def token_distribution_chart(ra: RunAnalysis) -> str | None:
    """TTFT and ITL histograms (measured window) and TTFT against each request's input length."""
    if ra.tokens is None or ra.tokens.requests.empty:
        return None
    tokens, figures = ra.tokens, ra.summary.get("tokens") or {}
    fig = new_figure(4.2)
    ttft_ax, itl_ax, input_ax = fig.subplots(1, 3)
    for ax, (counts, edges, log), key, label in ((ttft_ax, tokens.ttft_histogram, "ttft_ms", "TTFT"),
                                                 (itl_ax, tokens.itl_histogram, "itl_ms", "ITL")):
        if counts.size == 0:
            ax.text(0.5, 0.5, f"no {label} measured", transform=ax.transAxes, ha="center", va="center")
            continue
        ax.stairs(counts, edges, fill=True, color="#54aeff", alpha=0.8)
        if log:
            ax.set_xscale("log")
            plain_log(ax.xaxis)
        for stat, color in (("p50", "#0969da"), ("p99", "#cf222e")):
            value = (figures.get(key) or {}).get(stat)
            if value is not None:
                ax.axvline(value, color=color, ls="--", lw=1, label=f"{stat} {value:.3g} ms")
        ax.set_xlabel(f"{label} (ms)" + (", log scale" if log else ""))
        ax.set_ylabel("requests" if key == "ttft_ms" else "gaps")
        ax.set_title(f"{label} histogram", loc="left")
        ax.legend(loc="upper right")
    requests = tokens.requests.dropna(subset=["ttft_ms"])
    known = requests["input_tokens"].notna()
    if known.any():
        input_ax.scatter(requests.loc[known, "input_tokens"], requests.loc[known, "ttft_ms"], s=6, alpha=0.5,
                         color="#0969da", lw=0)
        input_ax.set_xlabel("input tokens (the server's usage.prompt_tokens)")
    else:
        input_ax.text(0.5, 0.5, "the server reported no prompt_tokens", transform=input_ax.transAxes,
                      ha="center", va="center")
    input_ax.set_ylabel("TTFT (ms)")
    input_ax.set_title("TTFT by input length (a dot per request)", loc="left")
    return png(fig)


@STYLE
def goodput_chart(ra: RunAnalysis) -> str | None:
    """Goodput and successful streams against the offered load: a dot per measured second, a big
    dot per stage (its mean offered load); where the two part, the server stops meeting its SLOs."""
    if ra.tokens is None or "goodput_rps" not in ra.tokens.win or ra.win["offered"].isna().all():
        return None
    n = min(len(ra.win), len(ra.tokens.win))
    win, tok = ra.win.iloc[:n], ra.tokens.win.iloc[:n]
    inside = ((win["t"] >= ra.warmup) & (win["t"] < ra.until)).to_numpy()
    offered = win["offered"].to_numpy()[inside]
    fig = new_figure(4.4)
    ax = fig.subplots()
    ax.scatter(offered, tok["ok_streams_per_s"].to_numpy()[inside], s=8, alpha=0.35, color="#8250df")
    ax.scatter(offered, tok["goodput_rps"].to_numpy()[inside], s=8, alpha=0.35, color="#bf8700")
    stages = []
    for st in ra.summary["stages"]:
        seconds = (win["t"] >= st["start_s"]) & (win["t"] < st["end_s"])
        if seconds.any() and st.get("goodput"):
            stages.append((float(win.loc[seconds, "offered"].mean()), st["ok_rps"] or 0.0, st["goodput"]["rps"] or 0.0))
    if stages:
        xs, ok, good = zip(*sorted(stages))
        ax.plot(xs, ok, "o-", ms=7, color="#8250df", label="successful streams/s (big dots: stages)")
        ax.plot(xs, good, "o-", ms=7, color="#bf8700", label="goodput: streams/s meeting every SLO")
    ax.set_xlabel(f"offered load ({ra.unit})")
    ax.set_ylabel("streams / second")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    slo = ", ".join(f"{k} <= {v:g}" for k, v in ((ra.summary.get("goodput") or {}).get("slo") or {}).items())
    ax.set_title(f"Goodput against the offered load ({slo}); small dots are seconds", loc="left")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(fig)
