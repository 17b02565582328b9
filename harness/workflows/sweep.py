"""`python -m harness sweep`: every combination of a server-settings matrix, run, ranked, compared."""
from __future__ import annotations

import itertools
import json
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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

    @property
    def label(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.settings.items())

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
    out = []
    for values in itertools.product(*matrix.values()):
        settings = dict(zip(matrix, values))
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "-", "_".join(f"{k}={v}" for k, v in settings.items()))
        config = ServerConfig.from_mapping({**base, **settings})
        problems = config.problems()
        skip = "invalid: " + "; ".join(problems) if problems else None
        if skip is None and config.workers * config.resolved_torch_threads > cores:
            skip = (f"oversubscribes the cores: {config.workers} workers x {config.resolved_torch_threads} "
                    f"torch threads > {cores} available cores")
        out.append(Combination(settings, sweep_dir / slug, skip))
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


def rank(results: list[dict[str, Any]], rank_by: str) -> list[dict[str, Any]]:
    """Best first: valid runs that passed their thresholds, by the figure; the rest after them."""
    lower = rank_by != "capacity" and figures.FIGURES[rank_by].better == "lower"

    def key(r: dict[str, Any]) -> tuple[int, float]:
        value = r["figure"]
        usable = r["valid"] and r["passed"] and value is not None
        return (0 if usable else 1, (value if lower else -value) if value is not None else float("inf"))

    ordered = sorted(results, key=key)
    for i, r in enumerate(ordered, 1):
        r["rank"] = i
    return ordered


def explain(ordered: list[dict[str, Any]], rank_by: str) -> str:
    """Why the winner won: its figure against the runner-up's."""
    if not ordered or ordered[0]["figure"] is None:
        return "no combination produced a usable figure"
    best = ordered[0]
    text = f"Winner: {best['label']} with {rank_by} = {best['figure']:.4g}"
    runner = next((r for r in ordered[1:] if r["figure"]), None)
    if runner:
        text += f", {best['figure'] / runner['figure']:.2f}x the runner-up {runner['label']} ({runner['figure']:.4g})"
    if not (best["valid"] and best["passed"]):
        text += " (but it is invalid or failed its thresholds)"
    return text


def intro_html(name: str, question: str, ordered: list[dict[str, Any]], skipped: list[Combination],
               rank_by: str) -> str:
    rows = [(r["rank"], r["label"], "-" if r["figure"] is None else f"{r['figure']:.4g}",
             "yes" if r["valid"] else "NO", "yes" if r["passed"] else "no", r["folder"]) for r in ordered]
    html = (f"<h2>Sweep {esc(name)}: ranking by {esc(rank_by)}</h2>"
            + (f"<p>{esc(question)}</p>" if question else "")
            + f"<div class='box'><p><b>{esc(explain(ordered, rank_by))}</b></p>"
            "<p class='note'>Ranked by the figure among valid runs that passed their thresholds; "
            "the first column of the table below is the winner (the baseline of the comparison).</p></div>"
            + table(["rank", "combination", rank_by, "valid", "passed", "run folder"], rows, numeric_from=9))
    if skipped:
        html += "<h3>Skipped combinations</h3><ul class='tight'>" + "".join(
            f"<li>{esc(c.label)}: {esc(c.skip or '')}</li>" for c in skipped) + "</ul>"
    return html


# measures one combination: (scenario, scenario path, folder) -> its summary or capacity result;
# None when it was interrupted before measuring anything
Measure = Callable[[Scenario, Path, Path], dict[str, Any] | None]


def run_sweep(path: Path, overrides: list[str], sweep_dir: Path, measure: Measure,
              rank_by: str | None = None, say: Callable[[str], None] = print) -> tuple[int, dict[str, Any]]:
    """Run (or resume) every combination with `measure(scenario, path, folder)` -> summary; rank; write pages."""
    from harness.report.compare import write_comparison

    scenario, _ = load_scenario(path, overrides)
    combos = combinations(scenario, sweep_dir)
    rank_by = rank_by or ("capacity" if scenario.capacity else scenario.sweep.rank_by)  # type: ignore[union-attr]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    results, skipped = [], []
    for i, combo in enumerate(combos, 1):
        head = f"[{i}/{len(combos)}] {combo.label}"
        if combo.skip:
            say(f"{head}: skipped, {combo.skip}")
            skipped.append(combo)
            continue
        summary = complete(combo.folder)
        kept = summary is not None
        if summary is None:
            shutil.rmtree(combo.folder, ignore_errors=True)
            combo.folder.mkdir(parents=True)
            one, one_path = load_scenario(path, overrides + combo.overrides())
            try:
                summary = measure(one, one_path, combo.folder)
            except UserError as exc:
                say(f"{head}: failed: {'; '.join(exc.messages)}")
                skipped.append(Combination(combo.settings, combo.folder, "failed: " + "; ".join(exc.messages)))
                continue
            if summary is None or summary.get("interrupted"):
                say(f"{head}: interrupted; rerun the same command to resume")
                return EXIT_INTERRUPTED, {}
        figure = figure_of(summary, rank_by)
        say(f"{head}: {rank_by} {'-' if figure is None else f'{figure:.4g}'}"
            f"{'' if summary.get('valid') else ' (INVALID)'}{' (complete from an earlier run, kept)' if kept else ''}")
        results.append({"label": combo.label, "settings": combo.settings, "folder": str(combo.folder),
                        "figure": figure, "valid": bool(summary.get("valid")),
                        "passed": bool(summary.get("passed", True)), "run_dir": summary.get("run_dir")})
    ordered = rank(results, rank_by)
    doc = {"name": scenario.name, "question": scenario.description, "rank_by": rank_by,
           "ranking": ordered, "winner": explain(ordered, rank_by),
           "skipped": [{"label": c.label, "reason": c.skip} for c in skipped]}
    layout.write_json(sweep_dir / SWEEP_FILE, doc, SCHEMA_VERSION)
    run_dirs = [d for d in (Path(r["run_dir"] or r["folder"]) for r in ordered)
                if (d / layout.SUMMARY).is_file()]  # a capacity search with no pass has none
    if len(run_dirs) >= 2:
        page, csv_path, _ = write_comparison(run_dirs, sweep_dir / "sweep.html",
                                             intro_html(scenario.name, scenario.description, ordered,
                                                        skipped, rank_by))
        doc["page"], doc["csv"] = str(page), str(csv_path)
    usable = any(r["valid"] for r in ordered)
    return (EXIT_PASSED if usable else EXIT_INVALID_RUN), doc


def print_ranking(doc: dict[str, Any], out: Any = sys.stdout) -> None:
    for r in doc["ranking"]:
        figure = "-" if r["figure"] is None else f"{r['figure']:.4g}"
        flags = "" if r["valid"] and r["passed"] else "  (invalid or failed thresholds)"
        print(f"  {r['rank']:>2}. {r['label']:<50} {doc['rank_by']} {figure}{flags}", file=out)
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
