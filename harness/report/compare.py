"""`python -m harness compare`: runs side by side against the first (baseline), a verdict, charts and a CSV."""
from __future__ import annotations

import datetime as dt
import glob
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness.analysis.runfolder import RunAnalysis, analyse_run, settings
from harness.errors import UserError
from harness.report import compare_charts
from harness.report.html import badge, esc, fmt, image, page, table
from harness.results import layout
from harness.results.figures import FIGURES, Figure, value

TIE = 0.03  # relative differences below this are ties
# figures judged (coloured against the baseline, counted in the verdict), then figures shown for context
# (a generative run's token figures join them; a figure no run has is left out of the page)
MAIN = [FIGURES[n] for n in ("ok_rps", "p50_ms", "p95_ms", "p99_ms", "error_rate", "req_per_cpu_s",
                             "output_tokens_per_s", "ttft_p95_ms", "itl_p50_ms", "goodput_rps")]
OTHER = [FIGURES[n] for n in ("requests", "rps", "p90_ms", "max_ms", "server_cpu_percent",
                               "generator_cpu_percent", "saturation_rps", "ttft_p50_ms", "ttft_p99_ms",
                               "itl_p99_ms", "tpot_p50_ms", "goodput_fraction", "gpu_utilization_percent",
                               "gpu_memory_peak_mb")]


def expand_run_dirs(args: list[str]) -> list[Path]:
    """Run folders from the command line; quoted globs match run folders (with a summary.json)
    and folders of repeats; a folder of repeats stands for its repeats."""
    runs: list[Path] = []
    for arg in args:
        if any(c in arg for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(arg)
                             if (Path(p) / layout.SUMMARY).is_file() or layout.repeat_dirs(Path(p)))
            if not matches:
                raise UserError(f"{arg}: matches no run folder (a folder with {layout.SUMMARY})")
            runs += layout.expand_repeats(matches)
        else:
            runs += layout.expand_repeats([Path(arg)])
    unique = list(dict.fromkeys(runs))
    if len(unique) < 2:
        raise UserError("compare needs at least two run folders; the first one is the baseline")
    return unique


def run_labels(analyses: list[RunAnalysis]) -> list[str]:
    """'workers=4 threads=2 lock=none' from the settings that differ between the runs."""
    every = [settings(ra.summary) for ra in analyses]
    keys = list(dict.fromkeys(k for s in every for k in s))
    differ = [k for k in keys if len({repr(s.get(k)) for s in every}) > 1]
    labels = [" ".join(f"{k}={s.get(k)}" for k in differ) or folder_label(ra.run_dir)
              for s, ra in zip(every, analyses)]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(f"{label} #{seen[label]}" if labels.count(label) > 1 else label)
    return unique


def folder_label(run_dir: Path) -> str:
    """The folder's name; a repeat is named with its parent (`nightly/repeat-2`)."""
    return f"{run_dir.parent.name}/{run_dir.name}" if layout.REPEAT_NAME.match(run_dir.name) else run_dir.name


def run_figures(ra: RunAnalysis, label: str) -> dict[str, Any]:
    """One run's row of the comparison: every MAIN and OTHER figure, from its summary or analysis
    (the knee's from the analysis, so that runs recorded before summary.json carried it have it too)."""
    s = ra.summary
    derived = {"req_per_cpu_s": ra.efficiency, "saturation_rps": ra.knee["saturation_rps"] if ra.knee else None}
    return {"run": folder_label(ra.run_dir), "label": label, "scenario": s["name"], "valid": s["valid"],
            "passed": s["passed"],
            **{f.name: derived[f.name] if f.name in derived else value(s, f.name) for f in MAIN + OTHER},
            "knee": ra.knee["knee"]["offered"] if ra.knee and ra.knee["knee"] else None}


def comparison_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run; every numeric figure also as <figure>_delta and <figure>_ratio vs the first run."""
    frame = pd.DataFrame(rows)
    for column in [f.name for f in MAIN + OTHER]:
        if column not in frame:  # a figure none of the rows has (token figures of plain runs)
            frame[column] = float("nan")
        values = pd.to_numeric(frame[column], errors="coerce")
        base = values.iloc[0]
        frame[f"{column}_delta"] = values - base
        frame[f"{column}_ratio"] = values / base if base and pd.notna(base) else float("nan")
    return frame


def _better(a: float, b: float, figure: Figure) -> bool:
    """a is better than b by more than the tie margin."""
    if figure.better == "higher":
        return a > b * (1 + TIE)
    return a < b * (1 - TIE) if b > 0 else False


def verdict(frame: pd.DataFrame) -> tuple[str, list[str]]:
    """The headline (which run is best on most main figures, or that none is) and one line per figure."""
    lines, wins, judged = [], {label: 0 for label in frame["label"]}, 0
    for figure in MAIN:
        name, higher = figure.label, figure.better == "higher"
        values = pd.to_numeric(frame[figure.name], errors="coerce")
        if values.isna().all():
            continue
        judged += 1
        best = int(values.idxmax() if higher else values.idxmin())
        others = values.drop(index=best).dropna()
        if others.empty:
            continue
        runner_up = others.max() if higher else others.min()
        if not _better(values[best], runner_up, figure):
            lines.append(f"{name}: a tie (within {TIE:.0%})")
            continue
        wins[frame.loc[best, "label"]] += 1
        ratio = f", {values[best] / runner_up:.2f}x the next best" if runner_up else ""
        lines.append(f"{name}: best is {frame.loc[best, 'label']} ({fmt(float(values[best]), 4)}{ratio})")
    top = max(wins.values())
    leaders = [label for label, n in wins.items() if n == top]
    if top > 0 and len(leaders) == 1:
        return f"Better overall: {leaders[0]} (best on {top} of {judged} main figures)", lines
    return "No run is better on most main figures", lines


def _cell(row: pd.Series, column: str, judged: Figure | None) -> tuple[str]:
    """A figure as raw HTML; a `judged` one coloured against the baseline with delta and ratio."""
    value = None if pd.isna(row[column]) else row[column]
    text = esc(fmt(value, 4))
    if judged is None or value is None:
        return (text,)
    ratio, delta = row[f"{column}_ratio"], row[f"{column}_delta"]
    base = value - delta
    css = "better" if _better(value, base, judged) else "worse" if _better(base, value, judged) else ""
    extra = f"{delta:+.4g}" + (f", {ratio:.2f}x" if np.isfinite(ratio) else "")
    return (f'<span class="{css}">{text}</span> <span class="note">({esc(extra)})</span>',)


def html_table(frame: pd.DataFrame) -> str:
    header = ["figure"] + [f"{label}" + (" (baseline)" if i == 0 else "") for i, label in enumerate(frame["label"])]
    rows = []
    for f in MAIN:
        if frame[f.name].notna().any():
            rows.append([f.label] + [_cell(r, f.name, f if i else None) for i, r in frame.iterrows()])
    for f in OTHER:
        if frame[f.name].notna().any():
            rows.append([f.label] + [_cell(r, f.name, None) for _, r in frame.iterrows()])
    rows.append(["valid / passed"] + [(badge("valid" if r.valid else "INVALID", "pass" if r.valid else "fail")
                                       + badge("passed" if r.passed else "failed", "pass" if r.passed else "fail"),)
                                      for r in frame.itertuples()])
    rows.append(["run folder"] + [r.run for r in frame.itertuples()])
    return table(header, rows)


def render(analyses: list[RunAnalysis], frame: pd.DataFrame, csv_name: str, intro_html: str = "") -> str:
    labels = list(frame["label"])
    headline, lines = verdict(frame)
    invalid = [lab for lab, ok in zip(labels, frame["valid"]) if not ok]
    warnings = "".join(f"<li>{esc(lab)} is INVALID: its figures may measure the generator, not the server</li>"
                       for lab in invalid)
    scenarios = set(frame["scenario"])
    if len(scenarios) > 1:
        warnings += f"<li>the runs used different scenarios ({esc(', '.join(sorted(scenarios)))})</li>"
    settings_rows = [(lab, ra.summary["target"].get("server") or ra.summary["target"].get("url"),
                      ra.summary["load_model"], ra.summary.get("engine"), str(ra.run_dir))
                     for lab, ra in zip(labels, analyses)]
    body = (
        f"<h1>Comparison of {len(analyses)} runs</h1>"
        f"<p class='sub'>Baseline: {esc(labels[0])} · labels name the settings that differ · "
        f"table as CSV: <code>{esc(csv_name)}</code></p>"
        f"<div class='box'><p><b>{esc(headline)}</b></p><ul class='tight'>"
        + "".join(f"<li>{esc(x)}</li>" for x in lines) + "</ul>" + (f"<h3>Caveats</h3><ul class='tight'>{warnings}</ul>" if warnings else "")
        + f"<p class='note'>Differences under {TIE:.0%} count as ties. Green: better than the baseline, "
          "red: worse; in brackets the difference and the ratio to the baseline.</p></div>"
        + intro_html + "<h2>Key figures</h2>" + html_table(frame)
        + "<h2>Latency vs throughput</h2>" + image(compare_charts.latency_throughput(analyses, labels), "curves")
        + (("<h2>Token latency vs token throughput</h2>"
            + image(compare_charts.token_pareto(analyses, labels), "token Pareto"))
           if any(ra.tokens is not None for ra in analyses) else "")
        + "<h2>Percentiles and throughput per run</h2>" + image(compare_charts.bars(frame), "bars")
        + "<h2>Timelines</h2>" + image(compare_charts.timelines(analyses, labels), "timelines")
        + "<h2>Server CPU efficiency</h2>" + image(compare_charts.efficiency(analyses, frame), "efficiency")
        + "<h2>Runs</h2>" + table(["label", "server", "load model", "engine", "run folder"], settings_rows,
                                  numeric_from=9)
        + f"<p class='note'>Generated {dt.datetime.now().isoformat(timespec='seconds')} by "
          "<code>python -m harness compare</code>.</p>")
    return page("Comparison: " + " vs ".join(labels), body)


def write_comparison(run_dirs: list[Path], output: Path | None, intro_html: str = "") -> tuple[Path, Path, str]:
    """Analyse every run, write the HTML page (with `intro_html` above the table) and the CSV next to it;
    returns both paths and the verdict."""
    analyses = [analyse_run(d) for d in run_dirs]
    labels = run_labels(analyses)
    frame = comparison_table([run_figures(ra, label) for ra, label in zip(analyses, labels)])
    if output is None:
        output = Path("reports") / f"compare-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.html"
    csv_path = output.with_suffix(".csv")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(csv_path, index=False, float_format="%.6g")
        layout.atomic_write(output, render(analyses, frame, csv_path.name, intro_html))
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output, csv_path, verdict(frame)[0]


def compare_command(run_dirs: list[str], output: Path | None) -> int:
    html_path, csv_path, headline = write_comparison(expand_run_dirs(run_dirs), output)
    print(f"{headline}\ncomparison: {html_path}\ntable: {csv_path}")
    return 0
