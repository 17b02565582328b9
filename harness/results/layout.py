"""The run folder's file names, and the two ways its files are written and read safely.

A run folder is the contract between the stages: the runner and engines write it, analysis and
reports read it, possibly long after and on another machine. Every name is defined here once.
JSON and HTML outputs are replaced atomically (a reader never sees half a file); files that grow
while a run is under way (samples, resources, metrics) are read up to their last complete line.
"""
from __future__ import annotations

import gzip
import json
import os
import re
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any

from harness.errors import UserError

SCENARIO = "scenario.yaml"  # the resolved scenario, as validated
META = "run.json"  # the run's metadata, written before the load starts
SUMMARY = "summary.json"
REPORT = "report.html"
SAMPLES_GLOB = "samples-*.csv*"  # one per generator process, optionally gzip-compressed
CHECKS_GLOB = "checks-*.csv*"  # failed response checks of each generator: row, reason
TOKENS_GLOB = "tokens-*.csv*"  # token times of each generator's streamed answers (results.tokens)
RESOURCES = "resources.csv"
METRICS = "metrics.csv"
GPU = "gpu.csv"
SERVER_LOG = "server.log"
LOCUST_PLAN = "locust-plan.json"
LOCUST_CLOCK = "locust-clock.json"
LOCUST_STATUS = "locust-status.json"
LOCUST_LOG = "locust.log"
REPEATS = "repeats.json"
SWEEP = "sweep.json"
CAPACITY = "capacity.json"
CAPACITY_PAGE = "capacity.html"
REPEAT_NAME = re.compile(r"^repeat-(\d+)$")  # RUN_DIR/repeat-K: one of `repeat: N` runs


def samples_file(run_dir: Path | str, gen: int) -> Path:
    """The sample file generator process (or Locust worker) `gen` writes."""
    return Path(run_dir) / f"samples-{gen}.csv"


def checks_file(samples: Path | str) -> Path:
    """The failed-checks side file of a sample file (`samples-3.csv` -> `checks-3.csv`)."""
    samples = Path(samples)
    return samples.with_name(f"checks-{generator_of(samples)}.csv")


def tokens_file(samples: Path | str) -> Path:
    """The token side file of a sample file (`samples-3.csv` -> `tokens-3.csv`)."""
    samples = Path(samples)
    return samples.with_name(f"tokens-{generator_of(samples)}.csv")


def tokens_files(run_dir: Path | str) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(TOKENS_GLOB) if p.suffix in (".csv", ".gz"))


def samples_of(side_file: Path) -> Path | None:
    """The sample file a side file (checks or tokens, maybe compressed) belongs to, if it is there."""
    gen = generator_of(side_file)
    for name in (f"samples-{gen}.csv", f"samples-{gen}.csv.gz"):
        if (side_file.parent / name).exists():
            return side_file.parent / name
    return None


def checks_files(run_dir: Path | str) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(CHECKS_GLOB) if p.suffix in (".csv", ".gz"))


def sample_files(run_dir: Path | str) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob(SAMPLES_GLOB) if p.suffix in (".csv", ".gz"))


def generator_of(path: Path) -> int:
    """The generator number in a sample file's name (`samples-3.csv` -> 3)."""
    return int(path.name.split(".")[0].split("-")[1])


def repeat_dir(run_dir: Path, k: int) -> Path:
    return Path(run_dir) / f"repeat-{k}"


def repeat_dirs(folder: Path) -> list[Path]:
    """The repeat-K folders of a repeated run (complete or not), in K order; [] for anything else."""
    folder = Path(folder)
    if not folder.is_dir() or (folder / SUMMARY).exists():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := REPEAT_NAME.match(p.name))]
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
            if (folder / SUMMARY).is_file():
                out.append(folder)
            else:
                print(f"note: skipping {folder}: no {SUMMARY} (the run was killed? "
                      f"`python -m harness report {path}` rebuilds it)", file=sys.stderr)
    return out


def atomic_write(path: Path | str, text: str) -> Path:
    """Write `text` to `path` through a temporary file and a rename: all or nothing."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: Path | str, doc: dict[str, Any], schema_version: int) -> Path:
    """A JSON document with its `schema_version` first, written atomically."""
    return atomic_write(path, json.dumps({"schema_version": schema_version, **doc}, indent=2, default=str) + "\n")


def read_json(path: Path | str, versions: Collection[int | None], what: str) -> dict[str, Any]:
    """A JSON document written by write_json, without its schema_version; UserError (exit 2)
    when it is unreadable or of a version this harness does not know (None: unversioned,
    for files from before they carried one). FileNotFoundError propagates."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: not a {what} (a JSON object was expected)")
    version = doc.pop("schema_version", None)
    if version not in versions:
        known = ", ".join(str(v) for v in versions if v is not None)
        raise UserError(f"{path}: {what} schema_version {version!r} is not supported "
                        f"(this harness reads version {known})")
    return doc


def complete_lines(path: Path | str) -> bytes:
    """The file up to its last newline (b"" when missing): a line torn by a writer that is still
    running, or was killed, is left out, never misread. Gzip files (`.gz`) are decompressed."""
    path = Path(path)
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except FileNotFoundError:
        return b""
    return data[:data.rfind(b"\n") + 1]


def log_tail(path: Path | str, lines: int = 15, indent: str = "    ") -> str:
    """The last lines of a log file, indented for an error message ("" when unreadable)."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return "\n".join(indent + line for line in text[-lines:])


class SideFile:
    """An append-only CSV side file of a sample file (checks, tokens), made with its header on the
    first write, so a run with nothing to say in it has none."""

    def __init__(self, path: Path, header: str) -> None:
        self.path = path
        self.header = header
        self._fd: int | None = None

    def write_text(self, text: str) -> None:
        if not text:
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.write(self._fd, self.header.encode())
        os.write(self._fd, text.encode())

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
