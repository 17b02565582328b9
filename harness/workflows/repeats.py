"""`repeat: N`: the same measurement N times, each a full run folder, and the spread between them.

One run's windows show the noise within a run; a shared machine also varies between runs (other
jobs come and go, the server starts afresh). Repeats measure that, and `check` resamples them as
groups. Layout: RUN_DIR/repeat-1 ... repeat-N (each a complete run folder with its own bundled
server) plus RUN_DIR/repeats.json with every repeat's headline and the spread.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import EXIT_INTERRUPTED
from harness.results import figures, layout
from harness.results.summary import RunResult

# repeats.json's schema_version. History: none = before JSON outputs were versioned; 1 = versioned.
SCHEMA_VERSION = 1
# figures whose spread is shown, keyed in repeats.json by their path in summary.json
SPREAD = [(str(f.path), f) for f in (figures.FIGURES[name] for name in ("rps", "p50_ms", "p95_ms", "p99_ms",
                                                                        "error_rate"))]


def run_repeats(count: int, run_dir: Path, execute: Callable[[Path], RunResult],
                say: Callable[[str], None]) -> dict[str, Any]:
    """Execute the run `count` times into repeat-K folders; stop early when one is interrupted.

    repeats.json is written whatever happens, with the repeats measured so far (an exception,
    e.g. a bundled server that no longer starts, still propagates afterwards)."""
    results: list[tuple[Path, RunResult]] = []
    try:
        for k in range(1, count + 1):
            folder = layout.repeat_dir(run_dir, k)
            folder.mkdir(parents=True, exist_ok=True)
            say(f"repeat {k}/{count}: {folder}")
            result = execute(folder)
            results.append((folder, result))
            if result.interrupted:
                say(f"interrupted during repeat {k} of {count}; the repeats so far are kept")
                break
    finally:
        doc = spread(results, count)
        layout.write_json(run_dir / layout.REPEATS, doc, SCHEMA_VERSION)
    return doc


def spread(results: list[tuple[Path, RunResult]], planned: int) -> dict[str, Any]:
    """Every repeat's headline figures; per figure over the complete repeats (partial ones are
    listed but left out), the mean, range and coefficient of variation (sample stdev / mean)."""
    rows = [{"folder": folder.name, "exit_code": r.exit_code, "valid": s["valid"], "partial": s["partial"],
             **{key: figures.value(s, f.name) for key, f in SPREAD}}
            for folder, r in results if (s := r.summary) is not None]
    complete = [row for row in rows if not row["partial"]]
    spreads = {}
    for key, _ in SPREAD:
        values = [float(v) for row in complete if isinstance(v := row[key], (int, float))]
        if values:
            mean = statistics.fmean(values)
            cv = statistics.stdev(values) / mean if len(values) > 1 and mean else None
            spreads[key] = {"mean": mean, "min": min(values), "max": max(values), "cv": cv}
    codes = [r.exit_code for _, r in results]
    interrupted = any(r.interrupted for _, r in results)
    return {"planned": planned, "completed": len(complete), "repeats": rows, "spread": spreads,
            "exit_code": EXIT_INTERRUPTED if interrupted else max(codes, default=EXIT_INTERRUPTED)}


def format_table(doc: dict[str, Any]) -> str:
    """One line per repeat, then the spread of each figure."""
    header = ["repeat", *(f.short for _, f in SPREAD), "valid"]
    lines = [header]
    for row in doc["repeats"]:
        valid = ("yes" if row["valid"] else "NO") + (" (partial: not in the spread)" if row["partial"] else "")
        lines.append([row["folder"], *(_fmt(row[key]) for key, _ in SPREAD), valid])
    for name in ("mean", "min", "max", "cv"):
        lines.append([name, *(_fmt(doc["spread"].get(key, {}).get(name), pct=name == "cv") for key, _ in SPREAD),
                      ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _fmt(value: Any, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if pct else f"{value:.4g}"
