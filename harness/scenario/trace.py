"""Reading a recorded trace (`load.trace`): arrival times, and optionally bodies, from jsonl or csv.

Times may be relative offsets or absolute timestamps: the replay starts at the earliest one, so
both read the same. With `body_field`, arrival k's body is its line's (in replay order): the
engines send them as the run's bodies, which they pick by global request index, so arrival k
sends body k in every engine and generator split (harness.engines.request_table). Lines out of time order are replayed sorted (with a note); a missing or
non-numeric time is a located error (`trace.csv:17: ...`), every bad line listed up to a limit,
before anything runs.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from harness.errors import UserError

MAX_PROBLEMS = 20  # bad lines listed one by one; the rest are counted
MAX_ARRIVALS = 5_000_000
UNITS = {"s": 1.0, "ms": 1e-3}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@dataclass(frozen=True)
class Trace:
    """A trace as the plan replays it: arrival offsets in seconds, sorted, already scaled by speed."""

    times: np.ndarray = field(compare=False)
    lines: np.ndarray = field(compare=False)  # the file line of each arrival, in replay order
    bodies: tuple[bytes, ...] | None  # body_field's value per arrival, in replay order (None: no bodies)
    notes: tuple[str, ...]

    @property
    def duration(self) -> float:
        """The replay's length: up to the last arrival plus the trace's mean gap (1 s for one arrival)."""
        n, last = len(self.times), float(self.times[-1])
        return last + (last / (n - 1) if n > 1 and last > 0 else 1.0)


class _Problems:
    def __init__(self, source: str) -> None:
        self.source = source
        self.messages: list[str] = []
        self.count = 0

    def add(self, line: int, text: str) -> None:
        self.count += 1
        if self.count <= MAX_PROBLEMS:
            self.messages.append(f"{self.source}:{line}: {text}")

    def raise_if_any(self) -> None:
        if self.count:
            more = self.count - len(self.messages)
            raise UserError(self.messages + ([f"{self.source}: ... and {more} more bad lines"] if more else []))


def _number(value: Any, name: str) -> float | str:
    """The value as a finite float, or the reason it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return f"{name} is not a number: {_show(value)}"
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return f"{name} is not a number: {_show(value)}"
    if not math.isfinite(number):
        return f"{name} is not a finite number: {_show(value)}"
    return number


def _show(value: Any) -> str:
    text = orjson.dumps(value, default=str).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _jsonl(path: Path, source: str, time_field: str, body_field: str | None,
           problems: _Problems) -> tuple[list[float], list[int], list[bytes]]:
    times: list[float] = []
    lines: list[int] = []
    bodies: list[bytes] = []
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                problems.add(number, f"invalid JSON: {exc}")
                continue
            if not isinstance(doc, dict):
                problems.add(number, f"a trace line is a JSON object with a {time_field!r} field, "
                                     f"got {type(doc).__name__}")
                continue
            if time_field not in doc:
                problems.add(number, f"no {time_field!r} field")
                continue
            value = _number(doc[time_field], time_field)
            if isinstance(value, str):
                problems.add(number, value)
                continue
            if body_field is not None:
                if body_field not in doc:
                    problems.add(number, f"no {body_field!r} field (load.trace.body_field)")
                    continue
                bodies.append(orjson.dumps(doc[body_field]))
            times.append(value)
            lines.append(number)
            if len(times) > MAX_ARRIVALS:
                raise UserError(f"{source}: more than {MAX_ARRIVALS:,} arrivals; split the trace")
    return times, lines, bodies


def _csv(path: Path, source: str, time_field: str, body_field: str | None,
         problems: _Problems) -> tuple[list[float], list[int], list[bytes]]:
    times: list[float] = []
    lines: list[int] = []
    bodies: list[bytes] = []
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise UserError(f"{source}:{reader.line_num}: not CSV: {exc}") from None
        if header is None:
            raise UserError(f"{source}: empty file (a csv trace starts with a header line naming "
                            f"its columns, e.g. {time_field})")
        columns = {name.strip(): i for i, name in enumerate(header)}
        for name, key in ((time_field, "time_field"), (body_field, "body_field")):
            if name is not None and name not in columns:
                raise UserError(f"{source}:1: no {name!r} column (load.trace.{key}); "
                                f"the header has {', '.join(map(repr, columns)) or 'no columns'}")
        at = columns[time_field]
        body_at = columns[body_field] if body_field is not None else -1
        while True:
            try:
                row = next(reader, None)
            except csv.Error as exc:
                problems.add(reader.line_num, f"not CSV: {exc}")
                break  # the reader cannot go on past a broken line reliably
            if row is None:
                break
            number = reader.line_num
            if not row or not any(cell.strip() for cell in row):
                continue
            cell = row[at].strip() if at < len(row) else ""
            if not cell:
                problems.add(number, f"missing {time_field}")
                continue
            value = _number(cell, time_field)
            if isinstance(value, str):
                problems.add(number, value)
                continue
            if body_at >= 0:
                text = row[body_at] if body_at < len(row) else ""
                try:
                    bodies.append(orjson.dumps(orjson.loads(text)))
                except orjson.JSONDecodeError as exc:
                    problems.add(number, f"{body_field} is not JSON: {exc}")
                    continue
            times.append(value)
            lines.append(number)
            if len(times) > MAX_ARRIVALS:
                raise UserError(f"{source}: more than {MAX_ARRIVALS:,} arrivals; split the trace")
    return times, lines, bodies


def read_trace(path: Path | str, *, time_field: str = "timestamp", unit: str = "s", speed: float = 1.0,
               body_field: str | None = None) -> Trace:
    """The trace at `path`, ready to replay; UserError (exit 2) listing every bad line (up to a limit)."""
    path = Path(path)
    source = str(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"{source}: a trace is a .jsonl or .csv file")
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"{source}: cannot read the trace: {exc.strerror or exc}") from None
    return _cached(path, source, kind, stat.st_mtime_ns, stat.st_size, time_field, unit, float(speed), body_field)


@lru_cache(maxsize=4)  # a scenario is validated, then planned: read each trace once
def _cached(path: Path, source: str, kind: str, _mtime: int, _size: int, time_field: str, unit: str,
            speed: float, body_field: str | None) -> Trace:
    problems = _Problems(source)
    reader = _jsonl if kind == "jsonl" else _csv
    try:
        times, lines, bodies = reader(path, source, time_field, body_field, problems)
    except UnicodeDecodeError as exc:
        raise UserError(f"{source}: not UTF-8 text (byte {exc.start}): {exc.reason}") from None
    except OSError as exc:
        raise UserError(f"{source}: cannot read the trace: {exc.strerror or exc}") from None
    problems.raise_if_any()
    if not times:
        raise UserError(f"{source}: no arrivals (every line is blank)")
    raw = np.asarray(times, dtype=np.float64)
    order = np.argsort(raw, kind="stable")
    notes: tuple[str, ...] = ()
    backwards = int(np.count_nonzero(np.diff(raw) < 0))
    if backwards:
        notes = (f"{source}: {backwards} line(s) earlier than the line before; replayed in time order",)
    offsets = (raw[order] - raw[order[0]]) * UNITS[unit] / speed
    if not np.isfinite(offsets).all():
        raise UserError(f"{source}: the timestamps span more than a float can hold")
    replay_bodies = tuple(bodies[i] for i in order) if body_field is not None else None
    return Trace(offsets, np.asarray(lines, dtype=np.int64)[order], replay_bodies, notes)
