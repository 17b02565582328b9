"""`python -m harness check`: judge a run against a baseline, noise-aware; the verdict as table, JUnit, JSON."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from harness.analysis.tokens import token_windows
from harness.analysis.windows import windows
from harness.errors import EXIT_INVALID_RUN, EXIT_PASSED, EXIT_THRESHOLD_FAILED, UserError
from harness.results import figures, layout
from harness.results import summary as summary_mod
from harness.results.samples import read_samples
from harness.results.summary import Summary
from harness.results.tokens import read_streams
from harness.scenario.schema import Check, format_error

BOOTSTRAP_RESAMPLES = 2000
BUSY_MACHINE_POINTS = 25.0  # system CPU (all cores, %) this much above the baseline's: say so
MIN_WINDOWS = 5  # fewer measured windows on a side than this: compare the stored figures instead
# the `check:` tolerance prefix (p95 -> p95_may_rise) -> the figure it judges; the token figures
# only where both sides are generative runs (they have a `tokens` block)
GATED = {"p50": "p50_ms", "p95": "p95_ms", "p99": "p99_ms", "rps": "ok_rps",
         "ttft_p95": "ttft_p95_ms", "itl_p50": "itl_p50_ms", "tokens": "output_tokens_per_s",
         "saturation": "saturation_rps", "knee": "knee_users", "knee_rps": "knee_rps",
         "gpu_memory": "gpu_memory_peak_mb"}
TOKEN_GATED = ("ttft_p95", "itl_p50", "tokens")
# one value per run (a ramp's verdicts, a GPU's peak memory; not per-window figures): judged where both sides have them,
# with repeats resampled as values; a single run a side is compared as it stands
PER_RUN_GATED = ("saturation", "knee", "knee_rps", "gpu_memory")


@dataclass
class Side:
    """One side of the comparison: one or more run folders (repeats) or summaries."""

    paths: list[Path]
    summaries: list[Summary]
    runs: list[pd.DataFrame] | None  # each run's measured windows; None when a side has no samples

    def figure(self, name: str) -> float | None:
        """The mean of a figure over this side's summaries."""
        values = [float(v) for s in self.summaries if (v := figures.value(s, name)) is not None]
        return float(np.mean(values)) if values else None

    def values(self, column: str) -> list[np.ndarray]:
        """Per-window values of one column, grouped by run (runs without any are left out)."""
        groups = [w[column].dropna().to_numpy() for w in self.runs or [] if column in w]
        return [g for g in groups if g.size]

    def per_run(self, name: str) -> list[np.ndarray]:
        """A per-run figure as one single-value group per run that has it (for the cluster bootstrap)."""
        return [np.array([float(v)]) for s in self.summaries if (v := figures.value(s, name)) is not None]


def load_side(paths: list[Path], width: float) -> Side:
    summaries: list[Summary] = []
    runs: list[pd.DataFrame] | None = []
    for path in paths:
        summary = summary_mod.read(path)
        summaries.append(summary)
        df = read_samples(path) if path.is_dir() else None
        if df is None or df.empty:
            runs = None
            continue
        until, warmup = float(summary["duration_s"]), float(summary["warmup_s"])
        win = windows(df, width, until=until, start=warmup)
        if summary.get("tokens"):
            tokens = token_windows(read_streams(path), until, width, start=warmup)
            for column in tokens.columns.drop("t"):
                win[column] = tokens[column].to_numpy()[:len(win)] if len(tokens) >= len(win) else np.nan
        if runs is not None:
            runs.append(win[win["t"] + width <= until + 1e-9])
    if runs is not None and sum(len(w) for w in runs) < MIN_WINDOWS:
        runs = None
    return Side(paths, summaries, runs)


def check_settings(run_dir: Path, overrides: list[str]) -> Check:
    """The `check:` tolerances of the run's scenario.yaml (defaults without one), then KEY=VALUE overrides."""
    doc: dict[str, Any] = {}
    scenario_file = run_dir / "scenario.yaml" if run_dir.is_dir() else run_dir.parent / "scenario.yaml"
    if scenario_file.is_file():
        loaded = yaml.safe_load(scenario_file.read_text()) or {}
        doc = dict(loaded.get("check") or {}) if isinstance(loaded, dict) else {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--check {item!r}: write KEY=VALUE, e.g. --check p95_may_rise=15%")
        doc[key.strip()] = yaml.safe_load(value) if value.strip().lower() not in ("", "null", "none") else None
    try:
        return Check.model_validate(doc)
    except ValidationError as exc:
        raise UserError([f"check settings: {format_error({**e, 'loc': ('check', *e['loc'])})}"
                         for e in exc.errors()]) from None


def bootstrap_ratio(run: list[np.ndarray], base: list[np.ndarray], statistic: str, confidence: float,
                    seed: int = 0) -> tuple[float, float, float]:
    """Ratio run/baseline of the statistic over windows, and its bootstrap confidence interval.

    Each side is a list of runs (repeats), each an array of per-window values. With one run the
    windows are resampled; with several, the runs are resampled first and then the windows within
    each drawn run (a two-stage cluster bootstrap), so differences between repeats widen the
    interval as they should instead of being averaged away.
    """
    stat = np.median if statistic == "median" else np.mean
    rng = np.random.default_rng(seed)
    run_draws = _draws(run, stat, rng)
    base_draws = _draws(base, stat, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = run_draws / base_draws
    ratios = ratios[np.isfinite(ratios)]
    ours, theirs = stat(np.concatenate(run)), stat(np.concatenate(base))
    point = float(ours / theirs) if theirs > 0 else float("nan")
    if ratios.size == 0:
        return point, point, point
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(ratios, [tail, 100 - tail])
    return point, float(low), float(high)


def _draws(groups: list[np.ndarray], stat: Callable[..., Any], rng: np.random.Generator) -> np.ndarray:
    if len(groups) == 1:
        values = groups[0]
        return stat(rng.choice(values, (BOOTSTRAP_RESAMPLES, values.size)), axis=1)
    draws = np.empty(BOOTSTRAP_RESAMPLES)
    for b in range(BOOTSTRAP_RESAMPLES):
        picked = rng.integers(len(groups), size=len(groups))
        draws[b] = stat(np.concatenate([rng.choice(groups[i], groups[i].size) for i in picked]))
    return draws


def status_of(low: float, high: float, tolerance: float, bad: str) -> str:
    """regression / improved / ok: a change counts only when the whole interval is beyond the tolerance."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "ok"
    if bad == "rise":
        return "regression" if low > 1 + tolerance else "improved" if high < 1 - tolerance else "ok"
    return "regression" if high < 1 - tolerance else "improved" if low > 1 + tolerance else "ok"


def calibration_factor(run_cal: Path | None, base_cal: Path | None) -> float | None:
    """How much slower this machine is than the baseline's: baseline calibration req/s over ours."""
    if run_cal is None and base_cal is None:
        return None
    if run_cal is None or base_cal is None:
        raise UserError("normalising needs both --calibration (measured in this job) and "
                        "--baseline-calibration (measured with the baseline)")
    ours, theirs = (summary_mod.read(p).get("ok_rps") for p in (run_cal, base_cal))
    if not ours or not theirs:
        raise UserError("a calibration run has no successful requests; it cannot normalise")
    return float(theirs) / float(ours)


def judge(run: Side, base: Side, check: Check, factor: float | None = None) -> dict[str, Any]:
    """The verdict document (also written as JSON): one row per judged figure, overall result, exit code."""
    noisy = run.runs is not None and base.runs is not None
    notes = []
    if not noisy:
        notes.append("no per-window samples on one side (a summary-only baseline or a very short run): "
                     "the stored whole-run figures are compared as single values, without a noise estimate")
    names = {s.get("name") for s in run.summaries + base.summaries}
    if len(names) > 1:
        notes.append(f"the runs come from different scenarios ({', '.join(sorted(map(str, names)))})")
    busy, calm = run.figure("system_cpu_percent"), base.figure("system_cpu_percent")
    if busy is not None and calm is not None and busy - calm > BUSY_MACHINE_POINTS:
        notes.append(f"the machine was busier during the run than during the baseline (system CPU {busy:.0f}% "
                     f"vs {calm:.0f}%): other work may have slowed it; confirm a regression with a second run")
    if factor is not None:
        notes.append(f"normalised by calibration: this machine is {factor:.3f}x as slow as the baseline's "
                     "(latency ratios divided, throughput ratios multiplied by it)")
    rows = []
    generative = all(s.get("tokens") for s in run.summaries + base.summaries)
    for name, figure_name in GATED.items():
        if name in TOKEN_GATED and not generative:
            continue
        figure = figures.FIGURES[figure_name]
        bad = "rise" if figure.better == "lower" else "fall"
        column, key, statistic = figure.window or figure.name, figure.name, figure.statistic
        tolerance = getattr(check, f"{name}_may_{bad}")
        if tolerance is None:
            continue
        if name in PER_RUN_GATED:
            run_vals, base_vals = run.per_run(key), base.per_run(key)
            if not run_vals or not base_vals:
                continue  # not a ramp on both sides (or no knee found on one): nothing to compare
        else:
            run_vals, base_vals = (run.values(column), base.values(column)) if noisy else ([], [])
        if name in PER_RUN_GATED and min(len(run_vals), len(base_vals)) >= 2:
            ratio, low, high = bootstrap_ratio(run_vals, base_vals, "mean", check.confidence)
            method = f"bootstrap mean of the repeats' values ({len(run_vals)} run, {len(base_vals)} baseline)"
        elif (name not in PER_RUN_GATED and sum(v.size for v in run_vals) >= MIN_WINDOWS
              and sum(v.size for v in base_vals) >= MIN_WINDOWS):
            ratio, low, high = bootstrap_ratio(run_vals, base_vals, statistic, check.confidence)
            method = f"bootstrap {statistic} of {check.window:g} s windows{_repeats_note(run_vals, base_vals)}"
        else:
            ours, theirs = run.figure(key), base.figure(key)
            ratio = ours / theirs if ours is not None and theirs else float("nan")
            low = high = ratio
            method = "stored figure"
        if factor is not None:
            scale = 1 / factor if bad == "rise" else factor
            ratio, low, high = ratio * scale, low * scale, high * scale
        rows.append({"metric": name, "label": figure.label, "baseline": base.figure(key), "run": run.figure(key),
                     "ratio": _num(ratio), "ci_low": _num(low), "ci_high": _num(high),
                     "tolerance": f"may {bad} {tolerance:.0%}", "method": method,
                     "status": status_of(low, high, tolerance, bad)})
    ours, theirs = run.figure("error_rate") or 0.0, base.figure("error_rate") or 0.0
    rows.append({"metric": "error_rate", "label": "error rate", "baseline": theirs, "run": ours,
                 "ratio": None, "ci_low": None, "ci_high": None,
                 "tolerance": f"may rise {check.error_rate_may_rise:g} (absolute)", "method": "stored figure",
                 "status": "regression" if ours - theirs > check.error_rate_may_rise else "ok"})
    invalid = [f"{p}: {'; '.join(s['invalid_reasons']) or 'invalid'}"
               for p, s in zip(run.paths, run.summaries) if not s.get("valid", False)]
    regressions = [r["metric"] for r in rows if r["status"] == "regression"]
    if invalid:
        verdict, code = "invalid", EXIT_INVALID_RUN
    elif regressions:
        verdict, code = "regression", EXIT_THRESHOLD_FAILED
    else:
        verdict, code = "pass", EXIT_PASSED
    return {"schema_version": 1, "verdict": verdict, "exit_code": code, "regressions": regressions,
            "invalid_reasons": invalid, "confidence": check.confidence, "calibration_factor": factor,
            "run": [str(p) for p in run.paths], "baseline": [str(p) for p in base.paths],
            "metrics": rows, "notes": notes}


def _repeats_note(run: list[np.ndarray], base: list[np.ndarray]) -> str:
    if len(run) == 1 and len(base) == 1:
        return ""
    return f", resampling repeats then windows ({len(run)} run, {len(base)} baseline)"


def _num(value: float) -> float | None:
    return round(float(value), 4) if value is not None and np.isfinite(value) else None


def run_check(runs: list[Path], baselines: list[Path], overrides: list[str],
              calibration: Path | None = None, baseline_calibration: Path | None = None) -> dict[str, Any]:
    """Read both sides and judge; baselines that are invalid cannot judge anything."""
    runs, baselines = layout.expand_repeats(runs), layout.expand_repeats(baselines)
    check = check_settings(runs[0], overrides)
    base = load_side(baselines, check.window)
    bad = [str(p) for p, s in zip(baselines, base.summaries) if not s.get("valid", False)]
    if bad:
        raise UserError(f"the baseline is an invalid run and cannot judge: {', '.join(bad)}", EXIT_INVALID_RUN)
    return judge(load_side(runs, check.window), base, check,
                 calibration_factor(calibration, baseline_calibration))

MARK = {"regression": "REGRESSION", "improved": "improved", "ok": "ok"}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _interval(row: dict[str, Any]) -> str:
    if row["ratio"] is None:
        return "-"
    if row["ci_low"] == row["ci_high"]:
        return f"{row['ratio']:.3f}x"
    return f"{row['ratio']:.3f}x [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def format_table(verdict: dict[str, Any]) -> str:
    """What moved: baseline and run figures, ratio with its confidence interval, tolerance, status."""
    header = ("figure", "baseline", "run", f"ratio [{verdict['confidence']:.0%} CI]", "tolerance", "status")
    rows = [(r["label"], _fmt(r["baseline"]), _fmt(r["run"]), _interval(r), r["tolerance"], MARK[r["status"]])
            for r in verdict["metrics"]]
    widths = [max(len(str(line[i])) for line in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    methods = sorted({r["method"] for r in verdict["metrics"]})
    lines.append(f"method: {'; '.join(methods)}")
    for note in verdict["notes"]:
        lines.append(f"note: {note}")
    for reason in verdict["invalid_reasons"]:
        lines.append(f"INVALID run: {reason}")
    if verdict["verdict"] == "regression":
        lines.append(f"REGRESSION in {', '.join(verdict['regressions'])} (exit 1)")
    elif verdict["verdict"] == "invalid":
        lines.append("the run is invalid: it is no evidence either way (exit 3)")
    else:
        lines.append("no regression beyond the tolerances (exit 0)")
    return "\n".join(lines)


def junit_xml(verdict: dict[str, Any]) -> str:
    """One test case per judged figure; a regression is a failure, an invalid run an error."""
    cases = []
    for row in verdict["metrics"]:
        name = quoteattr(f"{row['metric']} ({row['tolerance']})")
        detail = (f"baseline {_fmt(row['baseline'])}, run {_fmt(row['run'])}, ratio {_interval(row)}, "
                  f"{row['method']}")
        body = ""
        if row["status"] == "regression":
            body = f"<failure message={quoteattr('regression: ' + detail)}>{escape(detail)}</failure>"
        elif verdict["verdict"] == "invalid":
            body = f"<error message={quoteattr('; '.join(verdict['invalid_reasons']))}/>"
        cases.append(f'    <testcase classname="loadtest.gate" name={name}>{body}'
                     f"<system-out>{escape(detail)}</system-out></testcase>")
    failures = sum(r["status"] == "regression" for r in verdict["metrics"])
    errors = len(verdict["metrics"]) if verdict["verdict"] == "invalid" else 0
    return ('<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<testsuites>\n  <testsuite name="loadtest regression gate" tests="{len(cases)}" '
            f'failures="{failures}" errors="{errors}">\n' + "\n".join(cases) + "\n  </testsuite>\n</testsuites>\n")


def write_outputs(verdict: dict[str, Any], junit: Path | None, json_path: Path | None) -> list[Path]:
    """Write the requested files (atomically); returns their paths."""
    written = []
    for path, text in ((junit, junit_xml(verdict) if junit else ""),
                       (json_path, json.dumps(verdict, indent=2) + "\n" if json_path else "")):
        if path is None:
            continue
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            layout.atomic_write(path, text)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        written.append(path)
    return written


def check_command(runs: list[Path], baselines: list[Path], overrides: list[str], calibration: Path | None,
                  baseline_calibration: Path | None, junit: Path | None, json_path: Path | None) -> int:
    """`harness check`: print the verdict table, write JUnit/JSON when asked; the verdict's exit code."""
    verdict = run_check(runs, baselines, overrides, calibration, baseline_calibration)
    print(format_table(verdict))
    for path in write_outputs(verdict, junit, json_path):
        print(f"wrote {path}")
    return int(verdict["exit_code"])
