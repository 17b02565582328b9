"""`python -m harness sweep`: every combination of a server-settings matrix, run, ranked, compared."""
from __future__ import annotations

import itertools
import json
import math
import re
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.analysis import ranking
from harness.analysis.ranking import Interval
from harness.errors import EXIT_INTERRUPTED, EXIT_INVALID_RUN, EXIT_PASSED, UserError
from harness.report.html import esc, table
from harness.results import figures, layout
from harness.results import summary as summary_mod
from harness.scenario.loading import load_scenario
from harness.scenario.schema import Scenario, ServerSettings
from target_server.config import ServerConfig, available_cores

SWEEP_FILE = layout.SWEEP
# sweep.json's schema_version. History: none = before JSON outputs were versioned; 1 = versioned.
SCHEMA_VERSION = 1


@dataclass
class Combination:
    """One point of the matrix: its settings, run folder, and why it is skipped (None: it runs)."""

    settings: dict[str, Any]
    folder: Path
    skip: str | None = None
    copy: int = 1  # the same settings listed again (an A/A check of the noise): 2, 3, ...

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.settings.items()) + (f" (copy {self.copy})" if self.copy > 1 else "")

    def overrides(self) -> list[str]:
        return [f"target.server.{k}={json.dumps(v)}" for k, v in self.settings.items()]


def combinations(scenario: Scenario, sweep_dir: Path) -> list[Combination]:
    """Every combination in matrix order; invalid or core-oversubscribing ones carry the reason."""
    if scenario.sweep is None:
        raise UserError("this scenario has no sweep: block (e.g. sweep: {server: {workers: [1, 2]}})")
    if not scenario.uses_bundled_server:
        raise UserError("a sweep starts the bundled server per combination; drop target.url")
    base = (scenario.target.server or ServerSettings()).model_dump()
    matrix = scenario.sweep.server
    cores = available_cores()
    out: list[Combination] = []
    seen: dict[str, int] = {}
    for values in itertools.product(*matrix.values()):
        settings = dict(zip(matrix, values))
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(f"{k}={v}" for k, v in settings.items()))
        copy = seen[slug] = seen.get(slug, 0) + 1
        slug += f"_copy{copy}" if copy > 1 else ""
        config = ServerConfig.from_mapping({**base, **settings})
        problems = config.problems()
        skip = "invalid: " + "; ".join(problems) if problems else None
        if skip is None and config.workers * config.resolved_torch_threads > cores:
            skip = (f"oversubscribes the cores: {config.workers} workers x {config.resolved_torch_threads} "
                    f"torch threads > {cores} available cores")
        out.append(Combination(settings, sweep_dir / slug, skip, copy))
    return out


def complete(folder: Path) -> dict[str, Any] | None:
    """The summary of a finished run folder or capacity search, or None (missing, unreadable, partial
    or interrupted)."""
    if (folder / layout.CAPACITY).is_file():
        try:
            result = layout.read_json(folder / layout.CAPACITY, (None, 1), "capacity result")
        except (OSError, UserError):
            return None
        return result if result.get("complete") else None
    try:
        summary = summary_mod.read(folder)
    except UserError:
        return None
    return None if summary.get("partial") or summary.get("interrupted") else dict(summary)


def figure_of(summary: dict[str, Any], rank_by: str) -> float | None:
    if rank_by == "capacity":
        return summary.get("capacity_rps")
    value = figures.value(summary, rank_by)
    return None if value is None else float(value)


def interval_of(measured: list[tuple[Path, dict[str, Any]]], values: list[float], rank_by: str) -> Interval | None:
    """A combination's interval: over its repeats, or from its one run's windows or capacity bracket."""
    if len(values) >= 2:
        return ranking.t_interval(values)
    if len(measured) != 1 or not values:
        return None
    folder, summary = measured[0]
    if rank_by == "capacity":
        return ranking.bracket_interval(summary.get("capacity_rps"), summary.get("first_failing_rps"))
    figure = figures.FIGURES[rank_by]
    if figure.window is None:
        return None
    from harness.workflows.gate import load_side

    groups = load_side([Path(summary.get("run_dir") or folder)], 1.0).values(figure.window)
    return ranking.bootstrap_interval(groups[0], figure.statistic) if groups else None


def combine(label: str, settings: dict[str, Any], folder: Path, measured: list[tuple[Path, dict[str, Any]]],
            rank_by: str) -> dict[str, Any]:
    """One combination's row of the ranking from its repeats (complete ones): the mean figure, its
    interval, and the run folder closest to the mean for the comparison page."""
    ok = [(f, s) for f, s in measured if s.get("valid") and s.get("passed", True)]
    values = [v for _, s in ok if (v := figure_of(s, rank_by)) is not None]
    figure = statistics.fmean(values) if values else None
    interval = interval_of(ok, values, rank_by)
    closest = min(measured, key=lambda fs: abs((figure_of(fs[1], rank_by) or 0.0) - (figure or 0.0)))
    return {"label": label, "settings": settings, "folder": str(folder), "figure": figure,
            "values": [figure_of(s, rank_by) for _, s in measured],
            "interval": None if interval is None else [interval.low, None if math.isinf(interval.high)
                                                       else interval.high],  # None: unbounded (JSON has no inf)
            "interval_method": None if interval is None else interval.method,
            "valid": all(bool(s.get("valid")) for _, s in measured),
            "passed": all(bool(s.get("passed", True)) for _, s in measured),
            "repeats": len(measured), "run_dir": closest[1].get("run_dir") or str(closest[0])}


def rank(results: list[dict[str, Any]], rank_by: str) -> list[dict[str, Any]]:
    """Best first: valid runs that passed their thresholds, by the figure; the rest after them."""
    lower = rank_by != "capacity" and figures.FIGURES[rank_by].better == "lower"

    def key(r: dict[str, Any]) -> tuple[int, float]:
        value = r["figure"]
        return (0 if r["usable"] else 1, (value if lower else -value) if value is not None else float("inf"))

    for r in results:
        r["usable"] = bool(r["valid"] and r["passed"] and r["figure"] is not None)
    ordered = sorted(results, key=key)
    for i, r in enumerate(ordered, 1):
        r["rank"] = i
    return ordered


def decide(ordered: list[dict[str, Any]], rank_by: str) -> dict[str, Any]:
    """The winner, or the combinations tied within noise (analysis.ranking.decide)."""
    rows = [{**r, "interval": None if r["interval"] is None else
             Interval(r["interval"][0], math.inf if r["interval"][1] is None else r["interval"][1],
                      r["interval_method"])} for r in ordered]
    return ranking.decide(rows, rank_by)


def intro_html(name: str, question: str, doc: dict[str, Any], skipped: list[Combination]) -> str:
    rank_by, ordered = doc["rank_by"], doc["ranking"]
    tied = set(doc["tied"])
    rows = [(r["rank"], r["label"], "-" if r["figure"] is None else f"{r['figure']:.4g}", _interval_text(r),
             r["repeats"], "winner" if r["label"] == doc["winner_label"] else "tied" if r["label"] in tied else "",
             "yes" if r["valid"] else "NO", "yes" if r["passed"] else "no", r["folder"]) for r in ordered]
    methods = sorted({r["interval_method"] for r in ordered if r["interval_method"]})
    html = (f"<h2>Sweep {esc(name)}: ranking by {esc(rank_by)}</h2>"
            + (f"<p>{esc(question)}</p>" if question else "")
            + f"<div class='box'><p><b>{esc(doc['winner'])}</b></p>"
            "<p class='note'>Ranked by the figure (the mean over repeats) among valid runs that passed their "
            "thresholds. A winner is declared only when its interval does not overlap the runner-up's; "
            f"intervals: {esc('; '.join(methods) or 'none')}. The first column of the table below is the best "
            "(the baseline of the comparison); with repeats, each combination is shown by its repeat closest "
            "to its mean.</p></div>"
            + table(["rank", "combination", rank_by, "interval", "repeats", "verdict", "valid", "passed",
                     "run folder"], rows, numeric_from=9))
    if skipped:
        html += "<h3>Skipped combinations</h3><ul class='tight'>" + "".join(
            f"<li>{esc(c.label)}: {esc(c.skip or '')}</li>" for c in skipped) + "</ul>"
    return html


def _interval_text(row: dict[str, Any]) -> str:
    if row["interval"] is None:
        return "-"
    low, high = row["interval"]
    return f"[{low:.4g}, {'-' if high is None else f'{high:.4g}'}]"


# measures one combination: (scenario, scenario path, folder) -> its summary or capacity result;
# None when it was interrupted before measuring anything
Measure = Callable[[Scenario, Path, Path], dict[str, Any] | None]


def run_sweep(path: Path, overrides: list[str], sweep_dir: Path, measure: Measure,
              rank_by: str | None = None, say: Callable[[str], None] = print) -> tuple[int, dict[str, Any]]:
    """Run (or resume) every combination `repeat` times with `measure(scenario, path, folder)` ->
    summary, round by round (each round measures every combination once, so a burst of machine
    load spreads over all of them); rank; decide; write sweep.json and the comparison page."""
    from harness.report.compare import write_comparison

    scenario, _ = load_scenario(path, overrides)
    combos = combinations(scenario, sweep_dir)
    assert scenario.sweep is not None  # combinations() refuses a scenario without one
    rank_by = rank_by or ("capacity" if scenario.capacity else scenario.sweep.rank_by)
    repeat = scenario.sweep.repeat
    sweep_dir.mkdir(parents=True, exist_ok=True)
    skipped = [c for c in combos if c.skip]
    for combo in skipped:
        say(f"{combo.label}: skipped, {combo.skip}")
    running = [c for c in combos if not c.skip]
    measured: dict[str, list[tuple[Path, dict[str, Any]]]] = {c.label: [] for c in running}
    failed: set[str] = set()
    total, step = len(running) * repeat, 0
    for k in range(1, repeat + 1):
        for combo in running:
            step += 1
            if combo.label in failed:
                continue
            folder = combo.folder if repeat == 1 else layout.repeat_dir(combo.folder, k)
            head = f"[{step}/{total}] {combo.label}" + (f" (repeat {k}/{repeat})" if repeat > 1 else "")
            summary = complete(folder)
            kept = summary is not None
            if summary is None:
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                one, one_path = load_scenario(path, overrides + combo.overrides())
                try:
                    summary = measure(one, one_path, folder)
                except UserError as exc:
                    say(f"{head}: failed: {'; '.join(exc.messages)}")
                    failed.add(combo.label)
                    skipped.append(Combination(combo.settings, combo.folder, "failed: " + "; ".join(exc.messages),
                                               combo.copy))
                    continue
                if summary is None or summary.get("interrupted"):
                    say(f"{head}: interrupted; rerun the same command to resume")
                    return EXIT_INTERRUPTED, {}
            figure = figure_of(summary, rank_by)
            say(f"{head}: {rank_by} {'-' if figure is None else f'{figure:.4g}'}"
                f"{'' if summary.get('valid') else ' (INVALID)'}"
                f"{' (complete from an earlier run, kept)' if kept else ''}")
            measured[combo.label].append((folder, summary))
    results = [combine(c.label, c.settings, c.folder, measured[c.label], rank_by)
               for c in running if c.label not in failed and measured[c.label]]
    ordered = rank(results, rank_by)
    verdict = decide(ordered, rank_by)
    doc = {"name": scenario.name, "question": scenario.description, "rank_by": rank_by, "repeat": repeat,
           "ranking": ordered, "winner": verdict["text"], "winner_label": verdict["winner"],
           "tied": verdict["tied"], "skipped": [{"label": c.label, "reason": c.skip} for c in skipped]}
    layout.write_json(sweep_dir / SWEEP_FILE, doc, SCHEMA_VERSION)
    run_dirs = [d for d in (Path(r["run_dir"] or r["folder"]) for r in ordered)
                if (d / layout.SUMMARY).is_file()]  # a capacity search with no pass has none
    if len(run_dirs) >= 2:
        page, csv_path, _ = write_comparison(run_dirs, sweep_dir / "sweep.html",
                                             intro_html(scenario.name, scenario.description, doc, skipped))
        doc["page"], doc["csv"] = str(page), str(csv_path)
    usable = any(r["valid"] for r in ordered)
    return (EXIT_PASSED if usable else EXIT_INVALID_RUN), doc


def print_ranking(doc: dict[str, Any], out: Any = sys.stdout) -> None:
    tied = set(doc["tied"])
    for r in doc["ranking"]:
        figure = "-" if r["figure"] is None else f"{r['figure']:.4g}"
        flags = "" if r["valid"] and r["passed"] else "  (invalid or failed thresholds)"
        mark = "  winner" if r["label"] == doc["winner_label"] else "  tied" if r["label"] in tied else ""
        print(f"  {r['rank']:>2}. {r['label']:<50} {doc['rank_by']} {figure} {_interval_text(r)}{mark}{flags}",
              file=out)
    print(doc["winner"], file=out)


def sweep_command(path: Path, overrides: list[str], out: Path | None) -> int:
    """`harness sweep`: measure every combination (a capacity search each when the scenario has a
    capacity: block), rank them, print the ranking and where the pages are."""
    from harness.run.runner import REPORTS_DIR
    from harness.workflows.capacity import search_capacity
    from harness.workflows.single import probe

    scenario, path = load_scenario(path, overrides)
    sweep_dir = out or REPORTS_DIR / f"sweep-{scenario.name}"

    def measure(one: Scenario, one_path: Path, folder: Path) -> dict[str, Any] | None:
        if one.capacity is not None:
            settings = json.dumps(one.target.server.model_dump() if one.target.server else None)
            return dict(search_capacity(one_path, overrides + [f"target.server={settings}"], folder, probe))
        return dict(summary) if (summary := probe(one, one_path, folder).summary) is not None else None

    code, doc = run_sweep(path, overrides, sweep_dir, measure)
    if doc:
        print_ranking(doc)
        print(f"sweep folder: {sweep_dir}")
        if "page" in doc:
            print(f"comparison: {doc['page']}")
    return code
