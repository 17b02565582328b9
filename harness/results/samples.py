"""The sample record: one row per request, its columns, error kinds, writer and readers.

Rows are appended to a lock-free deque by request threads and written by one thread every
~200 ms as whole lines in a single write() each, so a crash or Ctrl-C loses at most the last
fraction of a second and never leaves a torn line behind a complete one. Each generator process
writes its own `samples-<gen>.csv` (results.layout); readers concatenate them (optionally
gzip-compressed). This module imports nothing heavy at load time: the Locust processes use it.
"""
from __future__ import annotations

import builtins
import io
import os
import sys
import threading
import traceback
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from harness.results import layout
from harness.results.checks import CheckLog
from harness.results.tokens import TokenLog, TokenRecord

if TYPE_CHECKING:
    import pandas as pd

# error kinds: the `error` column ("" = success)
OK = ""
HTTP_ERROR = "http"  # an HTTP status >= 400
TIMEOUT = "timeout"
CONNECT = "connect"  # refused or failed connect: the request never reached the server
RESET = "reset"
CLOSED = "closed"  # the server closed the connection before answering
PROTOCOL = "protocol"  # a response the client could not parse
TOO_LARGE = "too_large"  # a body above the client's limit
NOT_SENT = "not_sent"  # open model: planned, never sent (no free slot before the run ended)
TLS = "tls"  # the TLS handshake or a TLS record failed (certificate, protocol, alert)
CHECK = "check"  # a response that failed target.expect (why: checks-<gen>.csv, results.checks)
ERROR_KINDS = (HTTP_ERROR, TIMEOUT, CONNECT, RESET, CLOSED, PROTOCOL, TOO_LARGE, NOT_SENT, TLS, CHECK)


class Sample(NamedTuple):
    """One request. Times are seconds since the run's start (one monotonic clock for all
    generators); start and end are None for a request that was planned but never sent."""

    intended: float  # when it was due to be sent: latency is timed from here
    start: float | None  # when it was sent
    end: float | None  # when its answer (or failure) arrived
    status: int  # HTTP status, 0 without a response
    error: str  # one of ERROR_KINDS, or OK
    bytes: int  # response body size
    stage: int  # index of the load plan's stage at `intended`
    gen: int  # generator process (or Locust worker)
    # The server's own Server-Timing split. On the request path the raw header value (bytes)
    # may stand in srv_queue_ms with the other two None: the writer thread parses it there.
    srv_queue_ms: float | builtins.bytes | None = None
    srv_infer_ms: float | None = None
    srv_total_ms: float | None = None
    # What was sent (None in runs of one kind of request, and in files written before these columns):
    name: str | None = None  # the request's name (target.dataset line names)
    line: int | None = None  # the dataset's line number (from 1)
    request_id: str | None = None  # the id sent in target.request_id's header


COLUMNS = list(Sample._fields)
HEADER = ",".join(COLUMNS) + "\n"
DTYPES = {"intended": "float64", "start": "float64", "end": "float64", "status": "int32",
          "error": "string", "bytes": "int64", "stage": "int32", "gen": "int32",
          "srv_queue_ms": "float64", "srv_infer_ms": "float64", "srv_total_ms": "float64",
          "name": "string", "line": "Int64", "request_id": "string"}
_OPTIONAL = ("start", "end", "srv_queue_ms", "srv_infer_ms", "srv_total_ms", "name", "line",
             "request_id")  # empty cell = missing (an unnamed request has no name, not the name "")
_SENT = ("name", "line", "request_id")  # columns added later: an older file lacks them
FLUSH_CHUNK = 256  # rows formatted per write()
_PLAIN = "%.6f,%.6f,%.6f,%d,%s,%d,%d,%d,,,"  # a sent request without Server-Timing (the common row)
_NOTHING = ",,,\n"  # the what-was-sent cells of a row without name, line or request id


def not_sent(intended: float, stage: int, gen: int) -> Sample:
    return Sample(intended, None, None, 0, NOT_SENT, 0, stage, gen)


def parse_server_timing(value: bytes | None) -> tuple[float, float, float | None] | None:
    """(queue_ms, infer_ms, total_ms) from `queue;dur=..., infer;dur=..., total;dur=...`.

    None if absent or without `infer`; queue defaults to 0 and total to None (unknown)."""
    if not value:
        return None
    found: dict[bytes, float] = {}
    for metric in value.split(b","):
        name, _, params = metric.strip().partition(b";")
        for param in params.split(b";"):
            key, _, number = param.strip().partition(b"=")
            if key == b"dur":
                try:
                    found[name.strip()] = float(number)
                except ValueError:
                    pass
    if b"infer" not in found:
        return None
    return found.get(b"queue", 0.0), found[b"infer"], found.get(b"total")


def format_row(row: Sample) -> str:
    """One CSV line of a sample."""
    intended, start, end, status, error, size, stage, gen, q, inf, total = row[:11]
    if len(row) == 11:  # a tuple of the older columns only
        sent = _NOTHING
    else:
        name, line, rid = row[11:]
        sent = (_NOTHING if name is None and line is None and rid is None
                else f",{name or ''},{'' if line is None else line},{rid or ''}\n")
    if start is None:  # a request that was planned but never sent
        return f"{intended:.6f},,,0,{error},0,{stage},{gen},,,{sent}"
    if q is None and inf is None:
        return _PLAIN % (intended, start, end, status, error, size, stage, gen) + sent
    if isinstance(q, bytes):
        parsed = parse_server_timing(q)
        if parsed is None:
            return _PLAIN % (intended, start, end, status, error, size, stage, gen) + sent
        q, inf, total = parsed
    return (f"{intended:.6f},{start:.6f},{end:.6f},{status},{error},{size},{stage},{gen},"
            f"{_ms(q)},{_ms(inf)},{_ms(total)}{sent}")


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def shifted(row: Sample, offset: float) -> Sample:
    """The same sample on another process's timeline (offset = its start - that process's start)."""
    return row._replace(intended=row.intended + offset,
                        start=None if row.start is None else row.start + offset,
                        end=None if row.end is None else row.end + offset)


class SampleWriter:
    """Thread-safe append; a background thread flushes complete lines to disk."""

    def __init__(self, path: Path, flush_interval: float = 0.2) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, HEADER.encode())
        self._rows: deque[Sample] = deque()
        # append(row) is deque.append itself: atomic, and no Python frame on the request path
        self.append = self._rows.append  # type: ignore[method-assign,assignment]
        self._interval = flush_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-writer", daemon=True)
        self._thread.start()
        self.written = 0
        self.unwritable = 0
        # id(row) -> why its response check failed, set before the row is appended; written with
        # the row's number to checks-<gen>.csv (harness.results.checks)
        self.reasons: dict[int, str] = {}
        self._checks: CheckLog | None = None
        # id(row) -> (its stream's token record, the run's t0), written to tokens-<gen>.csv the same way
        self.tokens: dict[int, tuple[TokenRecord, float]] = {}
        self._tokens: TokenLog | None = None

    def append(self, row: Sample) -> None:  # replaced per instance by deque.append (see __init__)
        self._rows.append(row)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write every queued row, FLUSH_CHUNK lines per write(): each write releases the GIL, so
        request threads waiting for it are not held up by a long batch. A row that cannot be
        formatted (a bug) is reported and skipped; it never costs the rows around it."""
        rows, reasons, tokens = self._rows, self.reasons, self.tokens
        while rows:
            lines: list[str] = []
            failed: list[tuple[int, str]] = []
            streamed: list[tuple[int, TokenRecord, float]] = []
            while rows and len(lines) < FLUSH_CHUNK:
                row = rows.popleft()
                try:
                    lines.append(format_row(row))
                except (TypeError, ValueError):
                    self._report_bad_row(row)
                    reasons.pop(id(row), None)
                    tokens.pop(id(row), None)
                    continue
                if reasons and (reason := reasons.pop(id(row), None)) is not None:
                    failed.append((self.written + len(lines), reason))
                if tokens and (found := tokens.pop(id(row), None)) is not None:
                    streamed.append((self.written + len(lines), *found))
            os.write(self._fd, "".join(lines).encode())
            self.written += len(lines)
            if failed:
                if self._checks is None:
                    self._checks = CheckLog(layout.checks_file(self.path))
                self._checks.write(failed)
            if streamed:
                if self._tokens is None:
                    self._tokens = TokenLog(layout.tokens_file(self.path))
                self._tokens.write(streamed)

    def _report_bad_row(self, row: Any) -> None:
        self.unwritable += 1
        if self.unwritable == 1:
            print(f"sample writer for {self.path}: cannot write row {row!r}:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()
        os.close(self._fd)
        if self._checks is not None:
            self._checks.close()
        if self._tokens is not None:
            self._tokens.close()


class RelayedSamples:
    """A sample file written from lines formatted elsewhere (a Locust worker's rows on the master)."""

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, HEADER.encode())

    def write(self, text: str) -> None:
        if text:
            os.write(self._fd, text.encode())

    def close(self) -> None:
        os.close(self._fd)


_INTENDED, _END, _ERROR = COLUMNS.index("intended"), COLUMNS.index("end"), COLUMNS.index("error")
_START, _STATUS, _STAGE = COLUMNS.index("start"), COLUMNS.index("status"), COLUMNS.index("stage")


def progress_fields(line: str) -> tuple[str, float | None] | None:
    """(error, latency in s) of one CSV line for a live progress count; None for the header, a
    not-sent row or a line that is not a sample. Latency is None when the request got no end."""
    fields = line.split(",")
    if len(fields) not in (len(COLUMNS), len(COLUMNS) - len(_SENT)) or fields[_INTENDED] == "intended" or fields[_ERROR] == NOT_SENT:
        return None
    try:
        return fields[_ERROR], float(fields[_END]) - float(fields[_INTENDED])
    except ValueError:
        return fields[_ERROR], None


def live_fields(line: str) -> tuple[str, str, str, float | None, float | None, float | None] | None:
    """(stage, status, error, start, end, latency in s) of one CSV line for the live metrics; None
    for the header, a not-sent row or a line that is not a sample."""
    fields = line.split(",")
    if len(fields) not in (len(COLUMNS), len(COLUMNS) - len(_SENT)) or fields[_INTENDED] == "intended" \
            or fields[_ERROR] == NOT_SENT:
        return None
    try:
        intended = float(fields[_INTENDED])
        start = float(fields[_START]) if fields[_START] else None
        end = float(fields[_END]) if fields[_END] else None
    except ValueError:
        return None
    return (fields[_STAGE], fields[_STATUS], fields[_ERROR], start, end,
            None if end is None else end - intended)


def read_samples(run_dir: Path) -> pd.DataFrame:
    """Every complete sample row of a run folder, sorted by intended send time."""
    import pandas as pd

    frames = [frame for path in layout.sample_files(run_dir) if not (frame := read_sample_file(path)).empty]
    if not frames:
        return _empty()
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("intended", kind="stable", ignore_index=True)


def _empty() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in DTYPES.items()})


def read_sample_file(path: Path) -> pd.DataFrame:
    """The complete rows of one sample file, in file order (row k of the file is index k - 1)."""
    import numpy as np
    import pandas as pd

    data = layout.complete_lines(path)
    if data.count(b"\n") <= 1:
        return _empty()
    df = pd.read_csv(io.BytesIO(data), dtype=DTYPES, keep_default_na=False, na_values={c: [""] for c in _OPTIONAL})
    if "srv_total_ms" not in df:  # written before samples carried the server's total time
        df["srv_total_ms"] = np.nan
    for column in _SENT:  # written before samples said what was sent
        if column not in df:
            df[column] = pd.Series(pd.NA, index=df.index, dtype=DTYPES[column])
    return df
