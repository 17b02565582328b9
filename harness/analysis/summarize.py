"""Build summary.json purely from a run folder: figures, stages, resources, verdicts, exit code."""
from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pandas as pd

from harness.analysis import stats, tokens, trends, validity
from harness.analysis.windows import windows
from harness.errors import EXIT_INTERRUPTED, EXIT_INVALID_RUN, EXIT_PASSED, EXIT_THRESHOLD_FAILED
from harness.results import checks
from harness.results.gpu import gpu_figures, read_gpu
from harness.results.meta import environment
from harness.results.resources import SERVER_ROLES, read_resources
from harness.results.samples import NOT_SENT, read_samples
from harness.results.summary import SCHEMA_VERSION, Summary
from harness.results.tokens import read_streams
from harness.scenario.plan import LoadPlan
from harness.scenario.thresholds import Threshold


def resource_figures(resources: pd.DataFrame, start: float, end: float) -> dict[str, Any]:
    window = resources[(resources["t"] >= start) & (resources["t"] <= end)]

    def per_process(role: str) -> list[dict[str, Any]]:
        rows = window[window["role"] == role]
        return [{"pid": int(pid), "cpu_percent_mean": round(float(g["cpu_percent"].mean()), 1),
                 "cpu_percent_max": round(float(g["cpu_percent"].max()), 1),
                 "rss_mb_max": round(float(g["rss_bytes"].max()) / 2**20, 1),
                 "threads_max": int(g["threads"].max())}
                for pid, g in rows.groupby("pid")]

    def role_total(roles: tuple[str, ...]) -> dict[str, Any]:
        rows = window[window["role"].isin(roles)]
        if rows.empty:
            return {"cpu_percent_mean": None, "cpu_percent_max": None, "rss_mb_max": None}
        per_tick = rows.groupby("t").agg(cpu=("cpu_percent", "sum"), rss=("rss_bytes", "sum"))
        return {"cpu_percent_mean": round(float(per_tick["cpu"].mean()), 1),
                "cpu_percent_max": round(float(per_tick["cpu"].max()), 1),
                "rss_mb_max": round(float(per_tick["rss"].max()) / 2**20, 1)}

    system = window[window["role"] == "system"]
    return {
        "server": {**role_total(SERVER_ROLES), "master": per_process("server"),
                   "workers": per_process("server_worker")},
        "generator": {**role_total(("generator",)), "processes": per_process("generator")},
        "system_cpu_percent_mean": round(float(system["cpu_percent"].mean()), 1) if not system.empty else None,
    }


def build(run_dir: Path, *, meta: dict[str, Any], plan: LoadPlan, thresholds: list[Threshold],
          max_in_flight: int, stopped_at: float, interrupted: bool, reasons: list[str],
          notes: list[str] | None = None, dataset_requests: int | None = None,
          goodput: dict[str, float | None] | None = None) -> Summary:
    """Everything in summary.json, from the samples and resources on disk plus the run's metadata
    (and the number of requests in target.dataset, to say how often the run went through it, and
    a generative run's goodput objectives)."""
    df = read_samples(run_dir)
    resources = read_resources(run_dir)
    until = min(stopped_at, plan.duration)
    window = stats.measured(df, plan.warmup, until)
    measured_s = max(until - plan.warmup, 0.0)
    headline = stats.window_figures(window, measured_s)
    streams = read_streams(run_dir) if (meta.get("target") or {}).get("api") else None

    stages = []
    for i, seg in enumerate(plan.segments):
        if seg.duration <= 0 or seg.start >= until:
            continue
        lo, hi = max(seg.start, plan.warmup), min(seg.stop, until)
        if hi <= lo:
            continue
        part = df[(df["intended"] >= lo) & (df["intended"] < hi)]
        stages.append({"index": i, "description": plan.describe_stage(i), "start_s": lo, "end_s": hi,
                       **stats.window_figures(part, hi - lo),
                       **({} if streams is None else
                          tokens.token_figures(stats.measured(streams, lo, hi), part, hi - lo, goodput))})

    per_second = windows(df, 1.0, plan, until=max(until, 1.0))
    knee, soak = trends.verdicts(df, plan, resources,
                                 per_second[(per_second["t"] >= plan.warmup) & (per_second["t"] < until)],
                                 plan.model, plan.warmup, until)

    verdict = validity.Verdict(reasons=list(reasons), notes=list(notes or []))
    validity.judge_generator_cpu(resources, plan.warmup, until, verdict)
    if plan.model == "open":
        validity.judge_open_model(window, max_in_flight, verdict)
    if headline["requests"] == 0:
        verdict.reasons.append("no request was sent in the measured window")
    verdict.notes += checks.summary_notes(run_dir)

    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "duration_s": round(until, 3),
        "warmup_s": plan.warmup,
        "measured_s": round(measured_s, 3),
        **headline,
        "stages": stages,
        "accounting": stats.accounting(df[df["intended"] < until]),
        "server_timing": stats.server_timing_split(window),
        **sent_figures(df[df["intended"] < until], window, measured_s, dataset_requests),
        **({} if streams is None else
           tokens.token_figures(stats.measured(streams, plan.warmup, until), window, measured_s, goodput)),
        **resource_figures(resources, plan.warmup, until),
        **trends.summary_blocks(knee, soak),
        **({"gpu": gpu} if (gpu := gpu_figures(read_gpu(run_dir), plan.warmup, until)) is not None else {}),
        "valid": verdict.valid,
        "invalid_reasons": verdict.reasons,
        "notes": verdict.notes,
        "partial": interrupted or bool(reasons) or stopped_at < plan.duration - 0.5,
        "interrupted": interrupted,
        "environment": environment(),
    }
    summary = cast(Summary, doc)  # every key built above is one of Summary's
    results = [t.evaluate(summary) for t in thresholds]
    summary["thresholds"] = results
    summary["passed"] = all(r["passed"] for r in results)
    summary["exit_code"] = exit_code(summary)
    return summary


def sent_figures(run: pd.DataFrame, window: pd.DataFrame, measured_s: float,
                 dataset_requests: int | None) -> dict[str, Any]:
    """`by_name`: the headline figures of each named kind of request (measured window), and
    `dataset`: how many of its requests the run sent, and in how many passes through the file."""
    out: dict[str, Any] = {}
    names = window["name"].dropna()
    if not names.empty:
        out["by_name"] = {str(name): stats.window_figures(part, measured_s)
                          for name, part in window[window["name"].notna()].groupby("name", sort=True)}
    if dataset_requests:
        sent = int(run["line"].notna().sum() - (run["line"].notna() & (run["error"] == NOT_SENT)).sum())
        out["dataset"] = {"requests": dataset_requests, "sent": sent,
                          "passes": round(sent / dataset_requests, 3),
                          "wraps": max(0, -(-sent // dataset_requests) - 1)}
    return out


def exit_code(summary: Summary) -> int:
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if not summary["valid"]:
        return EXIT_INVALID_RUN
    if not summary["passed"]:
        return EXIT_THRESHOLD_FAILED
    return EXIT_PASSED
