"""`repeat: N`: the same measurement N times, each a full run folder, and the spread between them.

One run's windows show the noise within a run; a shared machine also varies between runs (other
jobs come and go, the server starts afresh). Repeats measure that, and `check` resamples them as
groups. Layout: RUN_DIR/repeat-1 ... repeat-N (each a complete run folder with its own bundled
server) plus RUN_DIR/repeats.json with every repeat's headline and the spread.
"""
from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import Any, Callable

from harness.errors import EXIT_INTERRUPTED
from harness.summary import SUMMARY_FILE
from harness.thresholds import lookup

REPEATS_FILE = "repeats.json"
REPEAT_DIR = re.compile(r"^repeat-(\d+)$")
FIGURES = [("rps", "req/s"), ("latency_ms.p50", "p50 ms"), ("latency_ms.p95", "p95 ms"),
           ("latency_ms.p99", "p99 ms"), ("error_rate", "error rate")]


def repeat_dirs(folder: Path) -> list[Path]:
    """The repeat-K run folders (holding a summary) of a repeated run, in K order; [] otherwise."""
    if not folder.is_dir() or (folder / SUMMARY_FILE).exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir()
             if (m := REPEAT_DIR.match(p.name)) and (p / SUMMARY_FILE).is_file()]
    return [p for _, p in sorted(found)]


def expand_repeats(paths: list[Path]) -> list[Path]:
    """Replace each folder of repeats by its repeat folders; leave run folders and summaries as they are."""
    out: list[Path] = []
    for path in paths:
        out += repeat_dirs(Path(path)) or [Path(path)]
    return out


def run_repeats(count: int, run_dir: Path, execute: Callable[[Path], dict[str, Any]],
                say: Callable[[str], None]) -> dict[str, Any]:
    """Execute the run `count` times into repeat-K folders; stop early on Ctrl-C. Writes repeats.json."""
    results: list[tuple[Path, dict[str, Any]]] = []
    for k in range(1, count + 1):
        folder = run_dir / f"repeat-{k}"
        folder.mkdir(parents=True, exist_ok=True)
        say(f"repeat {k}/{count}: {folder}")
        result = execute(folder)
        results.append((folder, result))
        if result.get("interrupted"):
            say(f"interrupted during repeat {k} of {count}; the repeats so far are kept")
            break
    doc = spread(results, count)
    (run_dir / REPEATS_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def spread(results: list[tuple[Path, dict[str, Any]]], planned: int) -> dict[str, Any]:
    """Every repeat's headline figures, and per figure the mean, range and coefficient of variation."""
    measured = [(folder, r) for folder, r in results if "requests" in r]
    rows = [{"folder": folder.name, "exit_code": r["exit_code"], "valid": r["valid"], "partial": r["partial"],
             **{key: lookup(r, key) for key, _ in FIGURES}} for folder, r in measured]
    figures = {}
    for key, _ in FIGURES:
        values = [float(row[key]) for row in rows if row[key] is not None]
        if values:
            mean = statistics.fmean(values)
            figures[key] = {"mean": mean, "min": min(values), "max": max(values),
                            "cv": statistics.pstdev(values) / mean if mean else None}
    codes = [r["exit_code"] for _, r in results]
    return {"planned": planned, "completed": len(rows), "repeats": rows, "spread": figures,
            "exit_code": EXIT_INTERRUPTED if any(r.get("interrupted") for _, r in results) else max(codes)}


def format_table(doc: dict[str, Any]) -> str:
    """One line per repeat, then the spread of each figure."""
    header = ["repeat", *(label for _, label in FIGURES), "valid"]
    lines = [header]
    for row in doc["repeats"]:
        lines.append([row["folder"], *(_fmt(row[key]) for key, _ in FIGURES), "yes" if row["valid"] else "NO"])
    for name in ("mean", "min", "max", "cv"):
        lines.append([name, *(_fmt(doc["spread"].get(key, {}).get(name), pct=name == "cv") for key, _ in FIGURES),
                      ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if pct else f"{value:.4g}"
