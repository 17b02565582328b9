"""One run folder read and analysed once, for the run report and the comparison page."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis import stats as analysis
from harness.analysis import tokens as token_analysis
from harness.analysis import trends
from harness.analysis.windows import little_check, windows
from harness.errors import UserError
from harness.results import summary as summary_mod
from harness.results.gpu import read_gpu
from harness.results.meta import read_plan
from harness.results.metrics import read_metrics
from harness.results.resources import SERVER_ROLES, read_resources
from harness.results.samples import read_samples
from harness.results.summary import Summary
from harness.results.tokens import read_streams
from harness.scenario.plan import LoadPlan


@dataclass
class TokenAnalysis:
    """A generative run's token timing for the pages (analysis.tokens)."""

    win: pd.DataFrame  # token_windows, per second over the whole run
    requests: pd.DataFrame  # per successful request of the measured window: ttft_ms, input_tokens, ...
    ttft_histogram: tuple[np.ndarray, np.ndarray, bool]
    itl_histogram: tuple[np.ndarray, np.ndarray, bool]


def analyse_tokens(run_dir: Path, summary: Summary, warmup: float, until: float) -> TokenAnalysis | None:
    if not summary.get("tokens"):
        return None
    streams = read_streams(run_dir)
    slo = (summary.get("goodput") or {}).get("slo")
    win = token_analysis.token_windows(streams, max(until, 1.0), slo=slo)
    measured = analysis.measured(streams, warmup, until)
    requests = token_analysis.per_request(measured)
    ok = measured.loc[requests.index]
    gaps = np.concatenate(list(ok["gaps"])) if len(ok) else np.zeros(0)
    return TokenAnalysis(win=win, requests=requests,
                         ttft_histogram=analysis.latency_histogram(requests["ttft_ms"].dropna().to_numpy()),
                         itl_histogram=analysis.latency_histogram(gaps))


@dataclass
class RunAnalysis:
    """Everything the pages show about one run; the raw samples are not kept (memory)."""

    run_dir: Path
    summary: Summary
    plan: LoadPlan | None
    win: pd.DataFrame  # per-second windows over the whole run, with server/generator CPU-seconds
    resources: pd.DataFrame
    series: pd.DataFrame  # resource_series
    metrics: pd.DataFrame
    spectrum: pd.DataFrame
    histogram: tuple[np.ndarray, np.ndarray, bool]
    knee: dict[str, Any] | None
    soak: dict[str, Any] | None
    little: dict[str, Any]
    efficiency: float | None  # requests per server CPU-second over the measured window
    tokens: TokenAnalysis | None = None  # a generative run's token timing
    gpu: pd.DataFrame = field(default_factory=pd.DataFrame)  # gpu.csv (empty without GPU telemetry)

    @property
    def warmup(self) -> float:
        return float(self.summary["warmup_s"])

    @property
    def until(self) -> float:
        return float(self.summary["duration_s"])

    @property
    def measured(self) -> pd.DataFrame:
        return self.win[(self.win["t"] >= self.warmup) & (self.win["t"] < self.until)]

    @property
    def unit(self) -> str:
        return "users" if self.summary["load_model"] == "closed" else "req/s"


def settings(summary: Summary) -> dict[str, Any]:
    """The settings that tell runs apart: server knobs, engine, load model, generator processes."""
    server = (summary.get("target") or {}).get("server_settings") or {}
    out: dict[str, Any] = dict(server)
    if not server:
        out["url"] = (summary.get("target") or {}).get("url")
    out.update(engine=summary.get("engine"), load=summary.get("load_model"),
               generators=summary.get("generator_processes"), scenario=summary.get("name"))
    return out


def analyse_run(run_dir: Path) -> RunAnalysis:
    """Read summary.json (refusing unknown schema versions), samples, resources and metrics; analyse."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run folder")
    summary = summary_mod.read(run_dir)
    df = read_samples(run_dir)
    if df.empty:
        raise UserError(f"{run_dir}: no samples (samples-*.csv) to report on")
    plan = read_plan(run_dir)
    warmup, until = float(summary["warmup_s"]), float(summary["duration_s"])
    resources = read_resources(run_dir)
    win = windows(df, 1.0, plan, until=max(until, 1.0))
    edges = np.append(win["t"].to_numpy(), win["t"].iloc[-1] + 1.0)
    win["server_cpu_s"] = analysis.cpu_seconds(resources, SERVER_ROLES, edges)
    win["generator_cpu_s"] = analysis.cpu_seconds(resources, ("generator",), edges)

    intended = df["intended"].to_numpy()
    answered = (intended >= warmup) & (intended < until) & (df["status"].to_numpy() > 0)
    latency = (df["end"].to_numpy()[answered] - intended[answered]) * 1000.0
    measured = win[(win["t"] >= warmup) & (win["t"] < until)]
    cpu_s = float(analysis.cpu_seconds(resources, SERVER_ROLES, np.array([warmup, until]))[0])
    series = analysis.resource_series(resources)

    knee, soak = trends.verdicts(df, plan, resources, measured, summary["load_model"], warmup, until)
    return RunAnalysis(
        run_dir=run_dir, summary=summary, plan=plan, win=win, resources=resources, series=series,
        metrics=read_metrics(run_dir), spectrum=analysis.percentile_spectrum(latency),
        histogram=analysis.latency_histogram(latency), knee=knee,
        soak=soak, little=little_check(measured, summary["load_model"]),
        efficiency=analysis.requests_per_cpu_second(float(summary["requests"]), cpu_s),
        tokens=analyse_tokens(run_dir, summary, warmup, until), gpu=read_gpu(run_dir))
