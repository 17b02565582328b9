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
import sys
from pathlib import Path
from typing import Any, Callable

from harness.errors import EXIT_INTERRUPTED
from harness.results.summary import SUMMARY_FILE
from harness.scenario.thresholds import lookup

REPEATS_FILE = "repeats.json"
REPEAT_DIR = re.compile(r"^repeat-(\d+)$")
FIGURES = [("rps", "req/s"), ("latency_ms.p50", "p50 ms"), ("latency_ms.p95", "p95 ms"),
           ("latency_ms.p99", "p99 ms"), ("error_rate", "error rate")]


def repeat_dirs(folder: Path) -> list[Path]:
    """The repeat-K folders of a repeated run (complete or not), in K order; [] for anything else."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / SUMMARY_FILE).exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := REPEAT_DIR.match(p.name))]
    return [p for _, p in sorted(found)]


def expand_repeats(paths: list[Path]) -> list[Path]:
    """Replace each folder of repeats by its complete repeat folders, saying which ones are skipped."""
    out: list[Path] = []
    for path in paths:
        repeats = repeat_dirs(Path(path))
        if not repeats:
            out.append(Path(path))
            continue
        for folder in repeats:
            if (folder / SUMMARY_FILE).is_file():
                out.append(folder)
            else:
                print(f"note: skipping {folder}: no {SUMMARY_FILE} (the run was killed? "
                      f"`python -m harness report {path}` rebuilds it)", file=sys.stderr)
    return out


def run_repeats(count: int, run_dir: Path, execute: Callable[[Path], dict[str, Any]],
                say: Callable[[str], None]) -> dict[str, Any]:
    """Execute the run `count` times into repeat-K folders; stop early when one is interrupted.

    repeats.json is written whatever happens, with the repeats measured so far (an exception,
    e.g. a bundled server that no longer starts, still propagates afterwards)."""
    results: list[tuple[Path, dict[str, Any]]] = []
    try:
        for k in range(1, count + 1):
            folder = run_dir / f"repeat-{k}"
            folder.mkdir(parents=True, exist_ok=True)
            say(f"repeat {k}/{count}: {folder}")
            result = execute(folder)
            results.append((folder, result))
            if result.get("interrupted"):
                say(f"interrupted during repeat {k} of {count}; the repeats so far are kept")
                break
    finally:
        doc = spread(results, count)
        (run_dir / REPEATS_FILE).write_text(json.dumps(doc, indent=2) + "\n")
    return doc


def spread(results: list[tuple[Path, dict[str, Any]]], planned: int) -> dict[str, Any]:
    """Every repeat's headline figures; per figure over the complete repeats (partial ones are
    listed but left out), the mean, range and coefficient of variation (sample stdev / mean)."""
    rows = [{"folder": folder.name, "exit_code": r["exit_code"], "valid": r["valid"], "partial": r["partial"],
             **{key: lookup(r, key) for key, _ in FIGURES}} for folder, r in results if "requests" in r]
    complete = [row for row in rows if not row["partial"]]
    figures = {}
    for key, _ in FIGURES:
        values = [float(row[key]) for row in complete if row[key] is not None]
        if values:
            mean = statistics.fmean(values)
            cv = statistics.stdev(values) / mean if len(values) > 1 and mean else None
            figures[key] = {"mean": mean, "min": min(values), "max": max(values), "cv": cv}
    codes = [r["exit_code"] for _, r in results]
    interrupted = any(r.get("interrupted") for _, r in results)
    return {"planned": planned, "completed": len(complete), "repeats": rows, "spread": figures,
            "exit_code": EXIT_INTERRUPTED if interrupted else max(codes, default=EXIT_INTERRUPTED)}


def format_table(doc: dict[str, Any]) -> str:
    """One line per repeat, then the spread of each figure."""
    header = ["repeat", *(label for _, label in FIGURES), "valid"]
    lines = [header]
    for row in doc["repeats"]:
        valid = ("yes" if row["valid"] else "NO") + (" (partial: not in the spread)" if row["partial"] else "")
        lines.append([row["folder"], *(_fmt(row[key]) for key, _ in FIGURES), valid])
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
