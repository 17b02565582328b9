"""summary.json: the versioned, complete result of a run, built purely from the run folder."""
from __future__ import annotations

import io
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from harness.analysis import stats as analysis
from harness.analysis import validity
from harness.errors import EXIT_INTERRUPTED, EXIT_INVALID_RUN, EXIT_PASSED, EXIT_THRESHOLD_FAILED, UserError
from harness.scenario.plan import LoadPlan
from harness.scenario.thresholds import Threshold

SCHEMA_VERSION = 1
SUMMARY_FILE = "summary.json"


def load_resources(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "resources.csv"
    if not path.exists():
        return pd.DataFrame(columns=["t", "role", "pid", "cpu_percent", "rss_bytes", "threads"])
    data = path.read_bytes()
    cut = data.rfind(b"\n")

    return pd.read_csv(io.BytesIO(data[:cut + 1]))


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
        "server": {**role_total(("server", "server_worker")), "master": per_process("server"),
                   "workers": per_process("server_worker")},
        "generator": {**role_total(("generator",)), "processes": per_process("generator")},
        "system_cpu_percent_mean": round(float(system["cpu_percent"].mean()), 1) if not system.empty else None,
    }


def environment() -> dict[str, Any]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        from importlib.metadata import version

        torch_version = version("torch")
    except Exception:
        torch_version = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch": torch_version, "harness_commit": commit}


def build(run_dir: Path, *, meta: dict[str, Any], plan: LoadPlan, thresholds: list[Threshold],
          max_in_flight: int, stopped_at: float, interrupted: bool, reasons: list[str],
          notes: list[str] | None = None) -> dict[str, Any]:
    """Everything in summary.json, from the samples and resources on disk plus the run's metadata."""
    df = analysis.load_samples(run_dir)
    resources = load_resources(run_dir)
    until = min(stopped_at, plan.duration)
    window = analysis.measured(df, plan.warmup, until)
    measured_s = max(until - plan.warmup, 0.0)
    headline = analysis.window_figures(window, measured_s)

    stages = []
    for i, seg in enumerate(plan.segments):
        if seg.duration <= 0 or seg.start >= until:
            continue
        lo, hi = max(seg.start, plan.warmup), min(seg.stop, until)
        if hi <= lo:
            continue
        part = df[(df["intended"] >= lo) & (df["intended"] < hi)]
        stages.append({"index": i, "description": plan.describe_stage(i), "start_s": lo, "end_s": hi,
                       **analysis.window_figures(part, hi - lo)})

    verdict = validity.Verdict(reasons=list(reasons), notes=list(notes or []))
    validity.judge_generator_cpu(resources, plan.warmup, until, verdict)
    if plan.model == "open":
        validity.judge_open_model(window, max_in_flight, verdict)
    if headline["requests"] == 0:
        verdict.reasons.append("no request was sent in the measured window")

    summary: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "duration_s": round(until, 3),
        "warmup_s": plan.warmup,
        "measured_s": round(measured_s, 3),
        **headline,
        "stages": stages,
        "accounting": analysis.accounting(df[df["intended"] < until]),
        "server_timing": analysis.server_timing_split(window),
        **resource_figures(resources, plan.warmup, until),
        "valid": verdict.valid,
        "invalid_reasons": verdict.reasons,
        "notes": verdict.notes,
        "partial": interrupted or bool(reasons) or stopped_at < plan.duration - 0.5,
        "interrupted": interrupted,
        "environment": environment(),
    }
    results = [t.evaluate(summary) for t in thresholds]
    summary["thresholds"] = results
    summary["passed"] = all(r["passed"] for r in results)
    summary["exit_code"] = exit_code(summary)
    return summary


def exit_code(summary: dict[str, Any]) -> int:
    if summary["interrupted"]:
        return EXIT_INTERRUPTED
    if not summary["valid"]:
        return EXIT_INVALID_RUN
    if not summary["passed"]:
        return EXIT_THRESHOLD_FAILED
    return EXIT_PASSED


def write(run_dir: Path, summary: dict[str, Any]) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def read(path: Path) -> dict[str, Any]:
    """Read a summary.json (or a run folder's), refusing schema versions this harness does not know."""
    path = Path(path)
    if path.is_dir():
        path = path / SUMMARY_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such summary") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read summary: {exc}") from None
    version = doc.get("schema_version") if isinstance(doc, dict) else None
    if version != SCHEMA_VERSION:
        raise UserError(f"{path}: summary schema_version {version!r} is not supported "
                        f"(this harness reads version {SCHEMA_VERSION})")
    return doc


def format_table(summary: dict[str, Any]) -> str:
    """The human summary printed at the end of a run."""
    lat = summary["latency_ms"]

    def ms(v: Any) -> str:
        return "-" if v is None else f"{v:.2f}"

    lines = [
        f"{summary['name']}: {summary['requests']} requests in {summary['measured_s']:.1f} s measured "
        f"({summary['load_model']} model, {summary['engine']} engine)",
        f"  throughput  {summary['rps'] or 0:.1f} req/s   errors {summary['errors']} "
        f"({summary['error_rate']:.2%})" + (f"  {summary['errors_by_kind']}" if summary["errors"] else ""),
        f"  latency ms  p50 {ms(lat['p50'])}  p90 {ms(lat['p90'])}  p95 {ms(lat['p95'])}  "
        f"p99 {ms(lat['p99'])}  p99.9 {ms(lat['p999'])}  max {ms(lat['max'])}",
    ]
    if summary["stages"]:
        lines.append("  stages:")
        for st in summary["stages"]:
            lines.append(f"    [{st['index']}] {st['description']:<34} {st['rps'] or 0:>9.1f} req/s  "
                         f"p95 {ms(st['latency_ms']['p95']):>8} ms  errors {st['errors']}")
    srv, gen = summary["server"], summary["generator"]
    if srv["cpu_percent_mean"] is not None:
        lines.append(f"  server      cpu {srv['cpu_percent_mean']:.0f}% (mean, all processes)  "
                     f"rss {srv['rss_mb_max']:.0f} MB (peak)")
    if gen["cpu_percent_mean"] is not None:
        lines.append(f"  generator   cpu {gen['cpu_percent_mean']:.0f}% (mean)")
    for t in summary["thresholds"]:
        observed = "-" if t["observed"] is None else f"{t['observed']:g}"
        lines.append(f"  threshold   {t['expression']:<24} observed {observed:<10} "
                     f"{'PASS' if t['passed'] else 'FAIL'}")
    lines.append(f"  valid       {'yes' if summary['valid'] else 'NO'}")
    for reason in summary["invalid_reasons"]:
        lines.append(f"    - {reason}")
    for note in summary["notes"]:
        lines.append(f"    note: {note}")
    if summary["partial"]:
        lines.append("  PARTIAL run (stopped early): figures cover what ran")
    return "\n".join(lines)
